import AsyncHTTPClient
import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import NIOCore
import SQLKit
import Synchronization
import Testing

/// A real `keyhaven serve` stopped with SIGTERM while gateway requests are in flight.
@Suite("Usage under SIGTERM")
struct UsageShutdownTests {
    /// With a flush interval of a minute, nothing is written before the signal: the events reach the database only
    /// through the drain on SIGTERM.
    @Test(
        "SIGTERM under gateway load: every answered request has its usage event once the server has exited",
        arguments: [100, 60_000], GatewayFront.allCases)
    func noEventLost(flushMilliseconds: Int, front: GatewayFront) async throws {
        let binary = try KeyhavenBinary()
        let fakes = try await FakeProviders.start()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.databasePath
        let runtime = try await directory.openRuntime()
        let owner = try await Fixtures.user(in: runtime.database)
        let integration = try await runtime.integrations.create(
            ownerID: owner, name: "openai", type: .openai, config: [:], credentials: .apiKey(FakeProviders.openAIKey),
            actor: .system)
        let (token, _) = try await runtime.tokens.create(
            kind: .service, userID: nil, name: "backend", scopes: [.gatewayUse], expiresAt: nil,
            audit: AuditEntry(actor: .operator, action: .tokenCreate))
        await runtime.shutdown()

        var environment = directory.serveEnvironment.merging([
            "KEYHAVEN_EGRESS_ALLOW_PRIVATE": "true",
            "KEYHAVEN_PROVIDER_OPENAI_URL": fakes.baseURL.absoluteString + "/openai",
            "KEYHAVEN_USAGE_FLUSH_MS": String(flushMilliseconds),
        ]) { $1 }
        if front == .listener { environment["KEYHAVEN_GATEWAY_ADDRESS"] = "127.0.0.1:0" }
        let server = try binary.start(["serve"], environment: environment, in: directory.path)
        let port = try #require(
            await (front == .listener ? server.gatewayPort() : server.listeningPort()), "\(server.stderr)")

        // Eight callers send chat completions until the server goes away (at most 2,000 requests in all).
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        let answered = Count()
        let sent = Count()
        let url = "http://127.0.0.1:\(port)/gateway/\(integration.id.lowercasedText)/v1/chat/completions"
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        while sent.add() <= 2_000 {
                            var request = HTTPClientRequest(url: url)
                            request.method = .POST
                            request.headers.add(name: "authorization", value: "Bearer \(token)")
                            request.headers.add(name: "content-type", value: "application/json")
                            request.body = .bytes(ByteBuffer(string: #"{"model":"gpt-4o","messages":[]}"#))
                            guard let response = try? await client.execute(request, timeout: .seconds(10)) else {
                                return
                            }
                            guard response.status == .ok,
                                let body = try? await response.body.collect(upTo: 1 << 20),
                                String(buffer: body).contains("\"usage\"")
                            else { return }
                            answered.add()
                        }
                    }
                }
            }
        }
        // Stop the server while the load runs.
        for _ in 0..<200 where answered.value < 100 { try await Task.sleep(for: .milliseconds(20)) }
        server.signal(SIGTERM)
        let status = await server.wait()
        await load.value
        try await client.shutdown()
        await fakes.stop()
        #expect(status == 0, "\(server.stderr.suffix(2000))")

        let accepted = answered.value
        let database = try await Database.open(.sqlite(path: path), logger: Logger(label: "test"))
        let recorded = try await database.withConnection { sql in
            try await sql.raw("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM usage_events").first()?.decode(
                column: "n", as: Int.self) ?? 0
        }
        let rolledUp = try await database.withConnection { sql in
            try await sql.raw("SELECT CAST(SUM(requests) AS BIGINT) AS n FROM usage_daily").first()?.decode(
                column: "n", as: Int?.self) ?? 0
        }
        await database.shutdown()
        #expect(accepted >= 100, "the load did not get going: \(accepted)")
        // Every answered request was recorded; a request cut off by the shutdown after its answer was sent may add one.
        #expect(recorded >= accepted && recorded <= min(sent.value, 2_000), "\(recorded) events, \(accepted) answered")
        #expect(rolledUp == recorded)
        #expect(fakes.unexpected.isEmpty)
    }
}

/// A counter shared by concurrent tasks.
final class Count: Sendable {
    private let count = Mutex(0)

    /// Adds `amount` (one unless said) and returns the new count.
    @discardableResult
    func add(_ amount: Int = 1) -> Int {
        count.withLock {
            $0 += amount
            return $0
        }
    }

    var value: Int { count.withLock { $0 } }
}
