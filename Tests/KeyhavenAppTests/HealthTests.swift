import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeyhavenApp
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import Testing

@Suite("Health endpoints and error bodies")
struct HealthTests {
    func runtime(_ directory: TemporaryDirectory) async throws -> KeyhavenRuntime {
        let configuration = KeyhavenConfiguration(
            database: .sqlite(path: directory.path + "/keyhaven.sqlite"), keyring: Fixtures.environmentKeyring())
        return try await KeyhavenRuntime.open(configuration, allowKeyringCreation: false, logger: Logger(label: "test"))
    }

    func json(_ response: TestResponse) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
    }

    @Test("liveness and readiness answer 200 with JSON and the security headers")
    func healthy() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let app = try await buildApplication(try await runtime(directory))
        try await app.test(.router) { client in
            for path in ["/healthz", "/readyz"] {
                let response = try await client.execute(uri: path, method: .get)
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json; charset=utf-8")
                #expect(response.headers[.xContentTypeOptions] == "nosniff")
                #expect(response.headers[.contentSecurityPolicy]?.contains("frame-ancestors 'none'") == true)
                #expect(response.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer")
            }
            let ready = try json(try await client.execute(uri: "/readyz", method: .get))
            #expect((ready["checks"] as? [String: String]) == ["database": "ok", "keyring": "ok"])
        }
    }

    @Test("readiness answers 503 with the JSON error body when the database is gone")
    func notReady() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let runtime = try await runtime(directory)
        let app = try await buildApplication(runtime)
        try await app.test(.router) { client in
            await runtime.database.shutdown()
            let response = try await client.execute(uri: "/readyz", method: .get)
            #expect(response.status == .serviceUnavailable)
            let error = try #require(try json(response)["error"] as? [String: Any])
            #expect(error["code"] as? String == "unavailable")
            #expect((error["message"] as? String)?.contains("database") == true)
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
    }

    @Test("unknown routes and methods answer with the JSON error body, never HTML or a stack trace")
    func errors() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let app = try await buildApplication(try await runtime(directory))
        try await app.test(.router) { client in
            let missing = try await client.execute(uri: "/api/nothing-here", method: .get)
            #expect(missing.status == .notFound)
            let body = try json(missing)
            #expect(body.keys.sorted() == ["error"])
            let error = try #require(body["error"] as? [String: Any])
            #expect(error["code"] as? String == "not_found")
            #expect(error["message"] as? String == "Not found.")
            #expect(missing.headers[.xContentTypeOptions] == "nosniff")
        }
    }

    @Test("a made-up request method does not become a metric label")
    func methodLabels() async throws {
        try await APIHarness.with(.sqlite) { api in
            for index in 0..<3 {
                _ = try await api.request(HTTPRequest.Method("MADEUP\(index)")!, "/healthz")
            }
            let metrics = try await api.metrics().text
            #expect(!metrics.contains("MADEUP"))
            #expect(metrics.contains(#"method="OTHER""#))
        }
    }
}
