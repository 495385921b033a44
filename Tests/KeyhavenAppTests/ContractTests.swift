import Foundation
import Hummingbird
import KeyhavenApp
import KeyhavenCore
import KeyhavenTestSupport
import KeyhavenWeb
import Testing

/// The OpenAPI document and the server cannot drift apart: the routes match both ways, and every response the API
/// suites record is checked against it by `APIHarness` (see `APIHarness.checkContract`).
@Suite("the API contract")
struct ContractTests {
    /// The router's routes that the document describes, as `METHOD /path/{param}`; web pages are left out.
    static func describedRoutes(_ router: Router<AppRequestContext>) -> Set<String> {
        Set(
            router.routes.compactMap { route -> String? in
                let parts = route.path.components.map { component -> String in
                    let text = component.description
                    return text.hasPrefix(":") ? "{\(text.dropFirst())}" : text
                }
                let path = "/" + parts.filter { !$0.isEmpty }.joined(separator: "/")
                guard OpenAPIContract.isDescribed(path) else { return nil }
                return "\(route.method.rawValue) \(path)"
            })
    }

    @Test("every route of the router is in openapi.json, and every operation of openapi.json is a route")
    func routesMatchTheDocument() async throws {
        try await APIHarness.with(.sqlite) { api in
            let routes = Self.describedRoutes(try await buildRouter(api.runtime))
            let operations = try OpenAPIContract().operations
            #expect(routes.count >= 19, "the router's routes were not listed: \(routes.sorted())")
            #expect(routes.subtracting(operations).sorted() == [], "routes missing from openapi.json")
            #expect(operations.subtracting(routes).sorted() == [], "operations in openapi.json without a route")
        }
    }

    @Test("GET /openapi.json serves the repository's document as is, an OpenAPI 3.1 document")
    func servedAsIs() async throws {
        try await APIHarness.with(.sqlite) { api in
            let response = try await api.request(.get, "/openapi.json")
            #expect(response.status == .ok)
            #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
            let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("Sources/KeyhavenWeb/Resources/openapi.json")
            let repository = try Data(contentsOf: file)
            #expect(response.body == repository)
            #expect(response.json["openapi"] as? String == "3.1.0")
        }
    }

    @Test("the response check refuses bodies the document does not allow, without quoting their values")
    func checkerRefusesDrift() throws {
        let contract = try OpenAPIContract()
        let secret = "sk-never-quoted-0123456789abcdef"
        func body(_ object: [String: Any]) throws -> Data { try JSONSerialization.data(withJSONObject: object) }
        let id = UUID().uuidString.lowercased()
        let good: [String: Any] = [
            "integration_id": id, "type": "openai", "status": "connected", "credential_version": 1,
            "credentials": secret, "config": [String: Any](),
        ]
        let path = "/api/integrations/\(id)/credentials"
        let json = "application/json; charset=utf-8"
        let goodBody = try body(good)
        #expect(contract.check(method: "GET", path: path, status: 200, contentType: json, body: goodBody) == [])
        var missing = good
        missing["credential_version"] = nil
        var extra = good
        extra["secret_hint"] = "x"
        var wrongType = good
        wrongType["type"] = "aws"
        for bad in [missing, extra, wrongType] {
            let badBody = try body(bad)
            let problems = contract.check(method: "GET", path: path, status: 200, contentType: json, body: badBody)
            #expect(!problems.isEmpty)
            #expect(!problems.joined().contains(secret))
        }
        let teapot = contract.check(method: "GET", path: path, status: 418, contentType: json, body: Data("{}".utf8))
        #expect(!teapot.isEmpty)
        let text = contract.check(method: "GET", path: path, status: 200, contentType: "text/plain", body: Data())
        #expect(!text.isEmpty)
        // Web pages are not part of the document.
        let page = contract.check(
            method: "GET", path: "/integrations", status: 200, contentType: "text/html", body: Data())
        #expect(page == [])
    }

    @Test("a known path with another method answers 405 with Allow and the error body; an unknown path 404")
    func methodNotAllowed() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            let response = try await api.request(.init("TRACE")!, "/api/integrations", auth: user.session)
            #expect(response.status == .methodNotAllowed)
            #expect(response.headers[.allow] == "GET, POST")
            #expect((response.json["error"] as? [String: Any])?["code"] as? String == "method_not_allowed")
            let item = try await api.request(.post, "/api/integrations/\(UUID())", auth: user.session)
            #expect(item.status == .methodNotAllowed)
            #expect(item.headers[.allow] == "DELETE, GET, PATCH, PUT")
            #expect(try await api.request(.get, "/api/nowhere", auth: user.session).status == .notFound)
        }
    }

    @Test("changing an integration's type, or sending another type's credentials, is a 409 that changes nothing")
    func typeConflicts() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session, key: "sk-contract-type-conflict-0000")
            let aws: [String: Any] = [
                "access_key_id": "AKIAQWERTYUIOPASDFGH", "secret_access_key": String(repeating: "a", count: 40),
            ]
            for body: [String: Any] in [
                ["type": "aws", "name": "x"], ["type": NSNull()], ["credentials": aws],
                ["config": ["region": "eu-west-1"]],
            ] {
                let response = try await api.request(.patch, "/api/integrations/\(id)", auth: user.session, json: body)
                #expect(response.status == .conflict)
            }
            let same = try await api.request(
                .patch, "/api/integrations/\(id)", auth: user.session, json: ["type": "openai", "name": "kept"])
            #expect(same.status == .ok)
            let invalid = try await api.request(
                .patch, "/api/integrations/\(id)", auth: user.session, json: ["credentials": "nope"])
            #expect(invalid.status == .unprocessableContent)
            let after = try await api.request(.get, "/api/integrations/\(id)", auth: user.session)
            #expect(after.json["credential_version"] as? Int == 1)
            #expect(after.json["name"] as? String == "kept")
        }
    }

    @Test("cursors are the documented positions: any id or sequence number pages, anything else is a 400")
    func cursors() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            #expect(try await api.request(.get, "/api/integrations?cursor=\(UUID())", auth: user.session).status == .ok)
            #expect(try await api.request(.get, "/api/audit?cursor=12", auth: user.session).status == .ok)
            for bad in ["", "bogus", "+12", "012", "-1"] {
                let response = try await api.request(.get, "/api/audit?cursor=\(bad)", auth: user.session)
                #expect(response.status == .badRequest)
            }
        }
    }
}
