import AsyncHTTPClient
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
@testable import KeyhavenApp
import KeyhavenCore
import KeyhavenTestSupport
import NIOCore
import Testing

/// The web server's edges: forms that change settings, who may read the metrics, what a request log line holds,
/// how long a reader may stall a connection, and how much memory buffered bodies may take.
@Suite("Web hardening")
struct WebHardeningTests {
    static let formType = "application/x-www-form-urlencoded"

    static func form(_ fields: [(String, String)]) -> Data {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return Data(fields.map { name, value in
            "\(name)=\(value.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")"
        }.joined(separator: "&").utf8)
    }

    /// The value a response's `Set-Cookie` gives `name`, with the cookie's whole line.
    static func cookie(_ name: String, in response: APIResponse) -> (value: String, line: String)? {
        for line in response.headers[values: .setCookie] where line.hasPrefix(name + "=") {
            let value = line.dropFirst(name.count + 1).prefix { $0 != ";" }
            return (String(value), line)
        }
        return nil
    }

    // MARK: Request logs

    @Test("a gateway request's log line names the route pattern: no integration id, no path, no query")
    func gatewayRequestLog() async throws {
        try await APIHarness.with(.sqlite) { api async throws in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            let (_, token) = try await api.serviceToken(scopes: [.gatewayUse])
            let canary = Fixtures.canary("query")
            let response = try await api.request(
                .get, "/gateway/\(id)/v1/models?key=\(canary)&note=\(canary)", auth: .bearer(token))
            #expect(response.status == .badGateway, "\(response.text)")
            let requests = api.logs.all.filter { $0.contains(": Request ") }
            #expect(requests.contains { $0.contains("/gateway/{id}/**") && $0.contains("502") }, "\(requests)")
            for line in requests {
                #expect(!line.contains(id), "\(line)")
                #expect(!line.contains(canary), "\(line)")
                #expect(!line.contains("v1/models"), "\(line)")
            }
            #expect(!api.logs.all.contains { $0.contains(canary) || $0.contains(token) })
        }
    }
}
