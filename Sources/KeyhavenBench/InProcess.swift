import Foundation
import Hummingbird
import KeyhavenApp
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenStorage
import KeyhavenWeb
import Logging
import NIOCore
import NIOEmbedded

// The same requests as the HTTP figures, handed straight to the router in this process: no sockets, no HTTP
// parsing, no load generator. What is left is Keyhaven's own work per request (authentication, queries, crypto,
// audit, JSON), so the gap to the HTTP figures is what the server and the client around it cost.

/// Runs each request over a database seeded by `seed` (ids and tokens in the environment, as `seed` prints them),
/// one at a time and from 32 tasks at once, and prints one line per request: `name|microseconds|requests per second`.
func runInProcess(databaseURL: String, masterKey: String) async throws {
    let environment = ProcessInfo.processInfo.environment
    guard let integration = environment["INTEGRATION"], let pat = environment["PAT"],
        let service = environment["SERVICE_TOKEN"]
    else { throw KeyhavenError.configuration("INTEGRATION, PAT and SERVICE_TOKEN must be set (see `seed`).") }
    let configuration = KeyhavenConfiguration(
        database: try DatabaseLocation(url: databaseURL),
        keyring: KeyringSource(environmentKey: try MasterKey(id: "primary", base64: masterKey)))
    let runtime = try await KeyhavenRuntime.open(configuration, allowKeyringCreation: false, logger: logger)
    let responder = try await buildRouter(runtime).buildResponder()
    let channel = NIOAsyncTestingChannel()

    @Sendable func call(_ path: String, _ headers: HTTPFields) async throws {
        let request = Request(
            head: .init(method: .get, scheme: "http", authority: "127.0.0.1", path: path, headerFields: headers),
            body: RequestBody(buffer: ByteBuffer()))
        let response = try await responder.respond(
            to: request, context: AppRequestContext(source: .init(channel: channel, logger: logger)))
        guard response.status == .ok else {
            throw KeyhavenError.configuration(
                "\(path) answered \(response.status.code), not 200: is the database seeded?")
        }
        try await response.body.write(DiscardingWriter())
    }

    let requests: [(String, String, HTTPFields)] = [
        ("GET /healthz", "/healthz", [:]),
        (
            "GET credentials (service token, audited)", "/api/integrations/\(integration)/credentials",
            [.authorization: "Bearer \(service)"]
        ),
        ("GET one integration (PAT)", "/api/integrations/\(integration)", [.authorization: "Bearer \(pat)"]),
        ("GET list of 50 (PAT)", "/api/integrations?limit=50", [.authorization: "Bearer \(pat)"]),
    ]
    for (name, path, headers) in requests {
        let alone = try await measureAsync(seconds: 2) { try await call(path, headers) }
        let concurrent = try await concurrently { try await call(path, headers) }
        print(String(format: "%@|%.1f|%.0f", name, 1e6 / alone, concurrent))
    }
    await runtime.shutdown()
}

/// A response body writer that drops what it is given (the bytes are still produced).
private struct DiscardingWriter: ResponseBodyWriter {
    mutating func write(_ buffer: ByteBuffer) async throws {}
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
