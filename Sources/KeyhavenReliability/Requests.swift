import AsyncHTTPClient
import Foundation
import KeyhavenTestSupport
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
    import Glibc
#endif

/// A server's answer, read whole.
struct Answer {
    let status: Int
    let headers: HTTPHeaders
    let body: Data
}

/// Sends one request to a server under test and reads its answer whole (at most 4 MiB), for what
/// `KeyhavenClient` does not cover: raw bodies, cookies, rotations, limits, the gateway.
///
/// - Parameters:
///   - bearer: a token, sent as `Authorization: Bearer`.
///   - json: a body, sent as `application/json`.
func request(
    _ method: HTTPMethod, _ url: String, bearer: String? = nil, headers: [String: String] = [:],
    json: Data? = nil, http: HTTPClient, timeout: TimeAmount = .seconds(10)
) async throws -> Answer {
    var request = HTTPClientRequest(url: url)
    request.method = method
    if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let json {
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: json))
    }
    let response = try await http.execute(request, timeout: timeout)
    let body = try await response.body.collect(upTo: 4 << 20)
    return Answer(status: Int(response.status.code), headers: response.headers, body: Data(buffer: body))
}

/// Stops `servers` with SIGTERM (SIGKILL if one is still running 20 s later) and returns what they wrote.
func stop(_ servers: [KeyhavenBinary.Running]) async -> String {
    for server in servers { server.signal(SIGTERM) }
    for server in servers { _ = await server.wait(timeout: .seconds(20)) }
    return servers.map { $0.stdout + $0.stderr }.joined()
}
