import Foundation
import HTTPTypes
import KeyhavenApp
import KeyhavenCore
import KeyhavenTestSupport
import KeyhavenWeb
import SQLKit
import Testing

/// Every number a route of the OpenAPI document accepts, fed the values that break arithmetic, and usage at the
/// edge of the range at rest: the server refuses or stores, and keeps answering.
@Suite("Numbers under hostile input")
struct NumericFuzzTests {
    /// JSON literals that break arithmetic or its conversions: the edges of Int64 and of doubles, their neighbours,
    /// the bounds validation uses, and values of the wrong type.
    static let hostile = [
        "0", "1", "-1", "0.5", "-0", "1e-300", "2", "365", "366", "9223372", "36854775807", "1000000", "1000001",
        "1000000000", "1000000000001", "1000000000000", "9007199254740993", "9223372036854775806",
        "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551616", "1e15", "1e19",
        "1e308", "-1e308", "1e400", "\"1\"", "null", "true", "[]", "{}",
    ]

    /// A route's valid body with `__N__` where the number goes, and the name its field problems are reported under.
    struct Case {
        let method: HTTPRequest.Method
        let route: String
        let field: String
        let problem: String
        let body: String
    }

    /// Every numeric field of every route, with a body that is valid but for that field. `numericFields` checks it
    /// against the OpenAPI document, so a new numeric field fails this suite until it is covered here.
    static let cases: [Case] =
        [
            Case(
                method: .post, route: "/api/tokens", field: "expires_in_days", problem: "expires_in_days",
                body: #"{"name":"fuzz","scopes":["integrations:read"],"expires_in_days":__N__}"#),
            Case(
                method: .post, route: "/api/orgs/{id}/service-tokens", field: "expires_in_days",
                problem: "expires_in_days",
                body: #"{"name":"fuzz","scopes":["credentials:read"],"expires_in_days":__N__}"#),
            Case(
                method: .post, route: "/api/integrations", field: "rotation.every_days", problem: "rotation.every_days",
                body:
                    #"{"name":"__NAME__","type":"aws","credentials":{"access_key_id":"AKIAQWERTYUIOPASDFGH","#
                    + #""secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},"rotation":{"mode":"#
                    + #""remind","every_days":__N__,"grace_hours":24}}"#
            ),
            Case(
                method: .post, route: "/api/integrations", field: "rotation.grace_hours",
                problem: "rotation.grace_hours",
                body:
                    #"{"name":"__NAME__","type":"aws","credentials":{"access_key_id":"AKIAQWERTYUIOPASDFGH","#
                    + #""secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},"rotation":{"mode":"#
                    + #""automatic","every_days":30,"grace_hours":__N__}}"#
            ),
            Case(
                method: .put, route: "/api/integrations/{id}", field: "rotation.every_days",
                problem: "rotation.every_days",
                body: #"{"rotation":{"mode":"remind","every_days":__N__,"grace_hours":24}}"#),
            Case(
                method: .put, route: "/api/integrations/{id}", field: "rotation.grace_hours",
                problem: "rotation.grace_hours",
                body: #"{"rotation":{"mode":"automatic","every_days":30,"grace_hours":__N__}}"#),
            Case(
                method: .patch, route: "/api/integrations/{id}", field: "rotation.every_days",
                problem: "rotation.every_days",
                body: #"{"rotation":{"mode":"remind","every_days":__N__,"grace_hours":24}}"#),
            Case(
                method: .patch, route: "/api/integrations/{id}", field: "rotation.grace_hours",
                problem: "rotation.grace_hours",
                body: #"{"rotation":{"mode":"automatic","every_days":30,"grace_hours":__N__}}"#),
        ]
        + [
            "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
            "requests",
        ]
        .map { field in
            var numbers = ["model": "\"gpt-4o-mini\"", "input_tokens": "1000", "output_tokens": "1000"]
            numbers[field] = "__N__"
            let body = numbers.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
            return Case(
                method: .post, route: "/api/integrations/{id}/usage", field: field, problem: field,
                body: "{\(body),\"idempotency_key\":\"__NAME__\"}")
        }
        + ["/api/integrations/{id}/limits", "/api/limits"].flatMap { route in
            ["monthly_budget_usd", "requests_per_minute", "tokens_per_minute"].map { field in
                Case(method: .put, route: route, field: field, problem: field, body: "{\"\(field)\":__N__}")
            }
        }
        + [(HTTPRequest.Method.post, "/api/templates"), (.put, "/api/templates/{id}")].flatMap { method, route in
            ["monthly_budget_usd", "requests_per_minute", "tokens_per_minute"].map { field in
                Case(
                    method: method, route: route, field: "limits.\(field)", problem: "limits.\(field)",
                    body: #"{"name":"__NAME__","type":"aws","name_pattern":"AWS {n}","limits":{"#
                        + "\"\(field)\":__N__}}")
            }
                + ["every_days", "grace_hours"].map { field in
                    let numbers =
                        field == "every_days"
                        ? #""every_days":__N__,"grace_hours":24"# : #""every_days":30,"grace_hours":__N__"#
                    return Case(
                        method: method, route: route, field: "rotation.\(field)", problem: "rotation.\(field)",
                        body:
                            #"{"name":"__NAME__","type":"aws","name_pattern":"AWS {n}","rotation":{"mode":"automatic","#
                            + numbers + "}}")
                }
        }
        + ["input_usd_per_million", "output_usd_per_million", "cached_input_usd_per_million"].map { field in
            var numbers = ["input_usd_per_million": "1", "output_usd_per_million": "1"]
            numbers[field] = "__N__"
            let body = numbers.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
            return Case(
                method: .put, route: "/api/orgs/{id}/prices", field: "prices[].\(field)", problem: "prices[0].\(field)",
                body: "{\"prices\":[{\"model\":\"gpt-4o-mini\",\(body)}]}")
        }

    /// The numeric fields of the request bodies in `openapi.json`, as `METHOD /path field.path`.
    static func documentedFields() throws -> Set<String> {
        let document = try #require(try JSONSerialization.jsonObject(with: OpenAPIDocument.data) as? [String: Any])
        let schemas = ((document["components"] as? [String: Any])?["schemas"] as? [String: Any]) ?? [:]
        func resolve(_ schema: [String: Any]) -> [String: Any] {
            var schema = schema
            for _ in 0..<20 {
                guard let reference = schema["$ref"] as? String,
                    let target = schemas[String(reference.split(separator: "/").last ?? "")] as? [String: Any]
                else { break }
                schema = target
            }
            return schema
        }
        var found: Set<String> = []
        func walk(_ schema: [String: Any], _ path: [String], _ operation: String, depth: Int = 0) {
            guard depth < 12 else { return }
            let schema = resolve(schema)
            for key in ["oneOf", "anyOf", "allOf"] {
                for case let option as [String: Any] in schema[key] as? [Any] ?? [] {
                    walk(option, path, operation, depth: depth + 1)
                }
            }
            let types = (schema["type"] as? [String]) ?? [(schema["type"] as? String) ?? ""]
            if types.contains("integer") || types.contains("number") {
                found.insert("\(operation) \(path.joined(separator: "."))")
            }
            for case (let name, let property as [String: Any]) in schema["properties"] as? [String: Any] ?? [:] {
                walk(property, path + [name], operation, depth: depth + 1)
            }
            if let items = schema["items"] as? [String: Any] {
                walk(items, path.isEmpty ? ["[]"] : path.dropLast() + ["\(path.last!)[]"], operation, depth: depth + 1)
            }
        }
        for case (let route, let operations as [String: Any]) in document["paths"] as? [String: Any] ?? [:] {
            for case (let method, let operation as [String: Any]) in operations {
                let content = ((operation["requestBody"] as? [String: Any])?["content"] as? [String: Any]) ?? [:]
                for case let media as [String: Any] in content.values {
                    if let schema = media["schema"] as? [String: Any] {
                        walk(schema, [], "\(method.uppercased()) \(route)")
                    }
                }
            }
        }
        return found
    }

    @Test("every numeric field of the OpenAPI document's request bodies is covered by the numeric fuzz")
    func numericFields() throws {
        let covered = Set(Self.cases.map { "\($0.method.rawValue) \($0.route) \($0.field)" })
        let documented = try Self.documentedFields()
        #expect(!documented.isEmpty)
        #expect(documented.subtracting(covered).isEmpty, "not fuzzed: \(documented.subtracting(covered).sorted())")
        #expect(covered.subtracting(documented).isEmpty, "not documented: \(covered.subtracting(documented).sorted())")
    }

    @Test(
        """
        hostile numbers in every numeric field get a 4xx naming the field or are \
        stored, and usage at the edge of the range reads back; the server stays up
        """,
        arguments: TestDatabase.all)
    func everyNumber(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let organization = try await api.runtime.organizations.create(name: "priced", by: user.id, actor: .system)
                .id
            let openai = try await api.runtime.integrations.create(
                ownerID: user.id, name: "metered", type: .openai, config: [:], credentials: .apiKey("sk-fuzz-000000"),
                actor: .system)
            let aws = try await api.runtime.integrations.create(
                ownerID: user.id, name: "cloud", type: .aws, config: ["region": "us-east-1"],
                credentials: .aws(
                    accessKeyID: "AKIAQWERTYUIOPASDFGH", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                    sessionToken: nil),
                actor: .system)
            let (_, reporter) = try await api.serviceToken(scopes: TokenScope.service)
            // The issue's report: with these prices, its tokens cost exactly Int64.max pico-dollars.
            let prices = try await api.request(
                .put, "/api/orgs/\(user.id.lowercased)/prices", auth: user.session,
                json: [
                    "prices": [
                        [
                            "model": "gpt-4o-mini", "input_usd_per_million": 1_000_000,
                            "output_usd_per_million": 0.000001,
                        ]
                    ]
                ])
            #expect(prices.status == .ok, "\(prices.text)")
            var outcomes: [String: Int] = [:]
            var counter = 0
            let template = try await api.request(
                .post, "/api/templates", auth: user.session,
                json: ["name": "numeric fuzz", "type": "aws", "name_pattern": "AWS {n}"])
            let templateID = try #require(template.json["id"] as? String, "\(template.text)")
            for test in Self.cases {
                let id =
                    test.route.contains("/api/templates/")
                    ? templateID
                    : test.route.contains("/api/orgs/")
                        ? organization.lowercased
                        : test.route.contains("/usage") ? openai.id.lowercased : aws.id.lowercased
                let path = test.route.replacingOccurrences(of: "{id}", with: id)
                let auth: TestAuth = test.route.hasSuffix("/usage") ? .bearer(reporter) : user.session
                for value in Self.hostile {
                    counter += 1
                    let body = test.body.replacingOccurrences(of: "__N__", with: value)
                        .replacingOccurrences(of: "__NAME__", with: "fuzz-\(counter)")
                    let response = try await api.request(test.method, path, auth: auth, json: Data(body.utf8))
                    let label = "\(test.method) \(test.route) \(test.field) ← \(value)"
                    switch response.status.code {
                    case 200..<300:
                        outcomes["2xx", default: 0] += 1
                    case 422:
                        #expect(response.fields.keys.contains(test.problem), "\(label): \(response.fields)")
                        outcomes["422", default: 0] += 1
                    case 400, 409:
                        outcomes["\(response.status.code)", default: 0] += 1
                    default:
                        Issue.record("\(label): \(response.status) \(response.text.prefix(300))")
                    }
                    #expect(try await api.request(.get, "/healthz").status == .ok, "\(label)")
                }
                // Prices that stayed set would refuse later reports for their cost: back to the table's.
                if test.route.hasSuffix("/prices") {
                    _ = try await api.request(.put, path, auth: user.session, json: ["prices": [] as [Any]])
                }
            }
            print("hostile numbers by status: \(outcomes.sorted { $0.key < $1.key })")

            // Years of usage at the edge of the range, at rest: rows a sum of which passes 2^63.
            try await api.runtime.database.transaction { sql in
                for (day, integration) in [
                    ("2026-01-01", openai.id), ("2026-01-02", openai.id), ("2026-01-02", aws.id),
                ] {
                    try await sql.raw(
                        """
                        INSERT INTO usage_daily (id, owner_id, integration_id, type, day, model, requests, input_tokens,
                        cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_micros,
                        unpriced_requests)
                        VALUES (\(bind: UUID()), \(bind: user.id), \(bind: integration), 'openai', \(bind: day),
                        'gpt-4o-mini', \(bind: Int64.max - 1), \(bind: Int64.max - 1), 0, 0, \(bind: Int64.max - 1), 0,
                        \(bind: Int64.max - 1), 0)
                        """
                    ).run()
                }
            }
            // A report on a day whose row is already at the edge adds to it without leaving the range.
            let report = try await api.request(
                .post, "/api/integrations/\(openai.id.lowercased)/usage", auth: .bearer(reporter),
                json: [
                    "model": "gpt-4o-mini", "input_tokens": 1_000_000_000_000, "output_tokens": 1_000_000_000_000,
                    "requests": 1_000_000_000_000, "idempotency_key": "edge", "occurred_at": "2026-01-02T12:00:00Z",
                ])
            #expect(report.status.code < 500, "\(report.text)")
            // The switch beside the limits takes true or false, not null.
            let null = try await api.request(
                .put, "/api/integrations/\(openai.id.lowercased)/limits", auth: user.session,
                json: Data(#"{"allow_unmetered_endpoints":null}"#.utf8))
            #expect(null.status == .unprocessableContent && null.fields.keys.contains("allow_unmetered_endpoints"))
            _ = try await api.request(
                .put, "/api/integrations/\(openai.id.lowercased)/limits", auth: user.session,
                json: ["monthly_budget_usd": 1_000_000_000])
            let reads = [
                "/api/usage?group_by=day&from=2026-01-01&to=2026-01-31",
                "/api/usage?group_by=model&from=2026-01-01&to=2026-01-31",
                "/api/usage?group_by=integration&from=2026-01-01&to=2026-01-31",
                "/api/usage?integration_id=\(openai.id.lowercased)&from=2026-01-01&to=2026-01-31",
                "/api/integrations/\(openai.id.lowercased)/limits", "/api/limits",
            ]
            for path in reads {
                let read = try await api.request(.get, path, auth: user.session)
                #expect(read.status == .ok, "\(path): \(read.status) \(read.text.prefix(300))")
            }
            let total = try await api.request(
                .get, "/api/usage?group_by=day&from=2026-01-01&to=2026-01-31", auth: user.session)
            let requests = (total.json["total"] as? [String: Any])?["requests"] as? Double
            #expect(requests.map { $0 >= 9.2e18 } == true, "the sum stops at the edge: \(total.text.prefix(300))")
            for page in ["/usage?from=2026-01-01&to=2026-01-31", "/integrations/\(openai.id.lowercased)"] {
                let shown = try await api.request(
                    .get, page, headers: [.cookie: "keyhaven_session=\(user.cookie)"])
                #expect(shown.status == .ok, "\(page): \(shown.status)")
            }
            #expect(try await api.request(.get, "/healthz").status == .ok)
        }
    }
}
