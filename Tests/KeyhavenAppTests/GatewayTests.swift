import AsyncHTTPClient
import Crypto
import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenDatabase
import KeyhavenGateway
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import NIOCore
import NIOHTTP1
import SQLKit
import Testing

/// A backend calling the gateway over real HTTP, as a provider SDK would.
struct GatewayCaller {
    let client: HTTPClient
    let base: String

    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: String
    }

    func send(
        _ path: String, method: HTTPMethod = .POST, headers: [(String, String)], json: [String: Any]? = nil,
        body: Data? = nil
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let json {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
        } else if let body {
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await client.execute(request, timeout: .seconds(30))
        let collected = try await response.body.collect(upTo: 16 << 20)
        return Answer(status: Int(response.status.code), headers: response.headers, body: String(buffer: collected))
    }

    /// Sends a streaming request and returns the answer unread.
    func open(_ path: String, headers: [(String, String)], json: [String: Any]) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: base + path)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.headers.add(name: "content-type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
        return try await client.execute(request, timeout: .seconds(30))
    }
}

/// What the gateway's suites share: a live server whose providers are the local fakes.
protocol GatewayHarness {}

extension GatewayHarness {
    /// Runs `body` with a live server on `kind` whose providers are the fakes (settings changed by `configure`), a
    /// user, a `gateway:use` service token, and a caller of the gateway on `front`.
    func withGateway(
        _ kind: TestDatabase = .sqlite, front: GatewayFront = .publicPort,
        configure: @escaping @Sendable (inout KeyhavenConfiguration) -> Void = { _ in },
        _ body: @Sendable (APIHarness, FakeProviders, GatewayCaller, TestUser, String) async throws -> Void
    ) async throws {
        let fakes = try await FakeProviders.start()
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try await APIHarness.with(
                kind, live: true,
                configure: {
                    $0.providerEndpoints = fakes.endpoints()
                    front.configure(&$0)
                    configure(&$0)
                }
            ) { api in
                let user = try await api.user()
                let (_, token) = try await api.serviceToken(scopes: [.gatewayUse])
                let caller = GatewayCaller(client: client, base: try await api.gatewayBase(front))
                try await body(api, fakes, caller, user, token)
            }
        } catch {
            try? await client.shutdown()
            await fakes.stop()
            throw error
        }
        try await client.shutdown()
        await fakes.stop()
    }

    /// Creates an integration of `type` with `key` through the API, in the user's workspace or `workspace`.
    func integration(
        _ api: APIHarness, _ user: TestUser, type: String = "openai", key: String, workspace: String? = nil
    ) async throws -> String {
        var body: [String: Any] = ["name": "\(type) \(UUID().uuidString.prefix(6))", "type": type, "credentials": key]
        if let workspace { body["workspace_id"] = workspace }
        let response = try await api.request(.post, "/api/integrations", auth: user.session, json: body)
        guard response.status == .created, let id = response.json["id"] as? String else {
            throw TestSetupError("integration: \(response.status) \(response.text)")
        }
        return id
    }
}

/// The gateway (SPEC §13) against the local fake providers, which check the credential they receive.
@Suite("Gateway")
struct GatewayTests: GatewayHarness {
    /// The usage of the user's workspace by model, once `requests` requests have been written.
    func usage(_ api: APIHarness, _ user: TestUser, requests: Int, query: String = "group_by=model") async throws
        -> [String: Any]
    {
        for _ in 0..<100 {
            let response = try await api.request(.get, "/api/usage?\(query)", auth: user.session)
            let total = (response.json["total"] as? [String: Any])?["requests"] as? Int ?? -1
            if total >= requests { return response.json }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestSetupError("usage did not reach \(requests) requests")
    }

    func rows(_ summary: [String: Any], by key: String) -> [String: [String: Any]] {
        var result: [String: [String: Any]] = [:]
        for case let row as [String: Any] in summary["rows"] as? [Any] ?? [] {
            if let name = row[key] as? String { result[name] = row }
        }
        return result
    }

    @Test(
        """
        OpenAI, Anthropic and Gemini requests round-trip with the \
        stored key injected, unary and streamed, and are priced exactly
        """, arguments: TestDatabase.all, GatewayFront.allCases)
    func roundTrips(kind: TestDatabase, front: GatewayFront) async throws {
        try await withGateway(kind, front: front) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, type: "openai", key: FakeProviders.openAIKey)
            let anthropic = try await integration(api, user, type: "anthropic", key: FakeProviders.anthropicKey)
            let gemini = try await integration(api, user, type: "gemini", key: FakeProviders.geminiKey)
            // The caller's own attempts at credentials and its cookies are dropped; the token is Keyhaven's.
            let noise = [
                ("cookie", "keyhaven_session=abc"), ("x-forwarded-for", "203.0.113.9"), ("accept-encoding", "gzip"),
                ("connection", "keep-alive"),
            ]
            let bearer = [("authorization", "Bearer \(token)")] + noise + [("x-goog-api-key", "caller-own-key")]

            let chat = try await caller.send(
                "/gateway/\(openai)/v1/chat/completions", headers: bearer,
                json: ["model": "gpt-4o", "messages": [["role": "user", "content": "Hi"]]])
            #expect(chat.status == 200, "\(chat.body)")
            #expect(chat.body.contains("\"prompt_tokens\":1000"))
            #expect(chat.headers.first(name: "keyhaven-integration") == openai)

            // A stream: the first chunk arrives while the provider still holds the rest.
            fakes.holdStreams()
            let streamed = try await caller.open(
                "/gateway/\(openai)/v1/chat/completions", headers: bearer,
                json: ["model": "gpt-4o", "stream": true, "messages": [["role": "user", "content": "Hi"]]])
            #expect(streamed.status == .ok)
            #expect(streamed.headers.first(name: "content-type")?.hasPrefix("text/event-stream") == true)
            var iterator = streamed.body.makeAsyncIterator()
            let first = try #require(try await iterator.next())
            #expect(String(buffer: first).contains("Hel"))
            fakes.releaseStreams()
            var rest = ""
            while let chunk = try await iterator.next() { rest += String(buffer: chunk) }
            #expect(rest.contains("lo") && rest.hasSuffix("data: [DONE]\n\n"))
            // Keyhaven asked for the usage chunk on the caller's behalf, and kept it to itself.
            #expect(!rest.contains("prompt_tokens"))
            let asked = try await caller.send(
                "/gateway/\(openai)/v1/chat/completions", headers: bearer,
                json: ["model": "gpt-4o", "stream": true, "stream_options": ["include_usage": true], "messages": []])
            #expect(asked.body.contains("\"prompt_tokens\":1000"))
            let embedding = try await caller.send(
                "/gateway/\(openai)/v1/embeddings", headers: bearer,
                json: ["model": "text-embedding-3-small", "input": "x"])
            #expect(embedding.status == 200)

            // Anthropic's SDK sends its key as x-api-key; Gemini's as x-goog-api-key (and some callers in the URL).
            let anthropicHeaders = [("x-api-key", token), ("anthropic-version", "2023-06-01")] + noise
            let message = try await caller.send(
                "/gateway/\(anthropic)/v1/messages", headers: anthropicHeaders,
                json: ["model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []])
            #expect(message.status == 200, "\(message.body)")
            let messageStream = try await caller.send(
                "/gateway/\(anthropic)/v1/messages", headers: anthropicHeaders,
                json: ["model": "claude-sonnet-4-5", "max_tokens": 10, "stream": true, "messages": []])
            #expect(messageStream.body.contains("event: message_delta") && messageStream.body.contains("message_stop"))
            let geminiHeaders = [("x-goog-api-key", token)] + noise
            let generated = try await caller.send(
                "/gateway/\(gemini)/v1beta/models/gemini-2.5-flash:generateContent?key=caller-own-key",
                headers: geminiHeaders, json: ["contents": []])
            #expect(generated.status == 200, "\(generated.body)")
            let geminiStream = try await caller.send(
                "/gateway/\(gemini)/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                headers: geminiHeaders,
                json: ["contents": []])
            #expect(geminiStream.body.hasPrefix("data: ") && geminiStream.body.contains("usageMetadata"))

            #expect(fakes.unexpected == [])
            // Usage, priced by hand: gpt-4o 600 × 2.5 + 400 × 1.25 + 500 × 10; embedding 125 × 0.02 rounded;
            // claude-sonnet-4-5 100 × 3 + 2000 × 0.3 + 1000 × 3.75 + 300 × 15; gemini-2.5-flash 6000 × 0.3 +
            // 4000 × 0.03 + 1000 × 2.5 + 500 × 2.5 micro-dollars.
            let summary = try await usage(api, user, requests: 8)
            let byModel = rows(summary, by: "model")
            #expect(byModel["gpt-4o-2024-08-06"]?["requests"] as? Int == 3)
            #expect(byModel["gpt-4o-2024-08-06"]?["cost_micros"] as? Int == 3 * 7_000)
            #expect(byModel["gpt-4o-2024-08-06"]?["cached_input_tokens"] as? Int == 3 * 400)
            #expect(byModel["text-embedding-3-small"]?["cost_micros"] as? Int == 3)
            #expect(byModel["claude-sonnet-4-5-20250929"]?["cost_micros"] as? Int == 2 * 9_150)
            #expect(byModel["claude-sonnet-4-5-20250929"]?["cache_write_tokens"] as? Int == 2 * 1_000)
            #expect(byModel["gemini-2.5-flash"]?["cost_micros"] as? Int == 2 * 5_670)
            #expect(byModel["gemini-2.5-flash"]?["reasoning_tokens"] as? Int == 2 * 500)
            #expect((summary["total"] as? [String: Any])?["cost_micros"] as? Int == 21_000 + 3 + 18_300 + 11_340)
            let byIntegration = rows(
                try await usage(api, user, requests: 8, query: "group_by=integration"), by: "integration_id")
            #expect(byIntegration[anthropic]?["requests"] as? Int == 2)

            // What reached the providers: their own key each, never the caller's token or headers.
            let calls = fakes.modelCalls
            #expect(calls.count == 8)
            for call in calls {
                #expect(!call.headers.values.contains { $0.contains("kh_svc_") || $0.contains("caller-own-key") })
                #expect(call.headers["cookie"] == nil && call.headers["x-forwarded-for"] == nil)
            }
            #expect(calls.first?.headers["authorization"] == "Bearer \(FakeProviders.openAIKey)")
            #expect(calls.first { $0.path.hasPrefix("/gemini") }?.query == nil)
            #expect(calls.first { $0.path.hasSuffix(":streamGenerateContent") }?.query == "alt=sse")

            // Counted in /metrics by provider, type and status, never by key or integration.
            let metrics = try await api.metrics().text
            #expect(
                metrics.contains(
                    #"keyhaven_gateway_requests_total{provider="openai",integration_type="openai",status="200"} 4"#))
            #expect(
                metrics.contains(
                    #"keyhaven_gateway_requests_total{provider="google",integration_type="gemini",status="200"} 2"#))
            #expect(!metrics.contains(openai))

            // The stored keys appear in no answer, log line, metric, audit row or usage row.
            let answers =
                [chat, asked, embedding, message, messageStream, generated, geminiStream].map { Data($0.body.utf8) }
                + [Data(rest.utf8), Data(metrics.utf8)]
            let logs = api.logs.all.map { Data($0.utf8) }
            let rows = try await api.handle.database.withConnection { sql in
                try await sql.raw("SELECT * FROM audit_events").all().map {
                    Data(((try? SQLAuditLog.eventText($0)) ?? "").utf8)
                }
                    + sql.raw("SELECT * FROM usage_events").all().map { row in
                        Data("\((try? row.decode(column: "model", as: String?.self)) ?? nil ?? "")".utf8)
                    }
            }
            // The caller's own key, sent in a header and in Gemini's `?key=`, reaches no log line either (the request
            // log leaves queries out).
            for key in [
                FakeProviders.openAIKey, FakeProviders.anthropicKey, FakeProviders.geminiKey, token, "caller-own-key",
            ] {
                #expect(!containsAnywhere(Data(key.utf8), in: answers + logs + rows), "a key leaked")
            }
        }
    }

    @Test("a 5 MB request body streams through to the provider intact", arguments: GatewayFront.allCases)
    func largeBody(front: GatewayFront) async throws {
        try await withGateway(front: front) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, type: "openai", key: FakeProviders.openAIKey)
            var generator = SystemRandomNumberGenerator()
            let body = Data((0..<(5 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) })
            let answer = try await caller.send(
                "/gateway/\(openai)/v1/uploads/echo", headers: [("authorization", "Bearer \(token)")], body: body)
            #expect(answer.status == 200, "\(answer.body)")
            let echoed = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
            #expect(echoed?["bytes"] as? Int == body.count)
            let digest = SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined()
            #expect(echoed?["sha256"] as? String == digest)
            #expect(fakes.unexpected == [])
        }
    }

    @Test(
        """
        requests without gateway:use, for another workspace, a disabled, unknown \
        or non-model integration, or a path out of the API never reach a provider
        """, arguments: GatewayFront.allCases)
    func refusals(front: GatewayFront) async throws {
        try await withGateway(front: front) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, type: "openai", key: FakeProviders.openAIKey)
            let aws =
                try await api.request(
                    .post, "/api/integrations", auth: user.session,
                    json: [
                        "name": "aws", "type": "aws",
                        "credentials": [
                            "access_key_id": FakeProviders.awsAccessKeyID, "secret_access_key": FakeProviders.awsSecret,
                        ],
                    ]
                ).json["id"] as? String ?? ""
            let pat = try await api.personalToken(for: user, scopes: ["integrations:read", "integrations:write"])
            let (_, reader) = try await api.serviceToken(scopes: [.credentialsRead])
            let org = try #require(
                try await api.request(.post, "/api/orgs", auth: user.session, json: ["name": "team"]).json["id"]
                    as? String)
            let scoped = try await api.request(
                .post, "/api/orgs/\(org)/service-tokens", auth: user.session,
                json: ["name": "team", "scopes": ["gateway:use"]])
            let scopedToken = try #require(scoped.json["secret"] as? String, "\(scoped.text)")
            let chat: [String: Any] = ["model": "gpt-4o", "messages": []]
            func status(_ path: String, _ token: String?) async throws -> (Int, String) {
                let answer = try await caller.send(
                    path, headers: token.map { [("authorization", "Bearer \($0)")] } ?? [], json: chat)
                return (answer.status, answer.body)
            }
            let path = "/gateway/\(openai)/v1/chat/completions"
            #expect(try await status(path, nil).0 == 401)
            #expect(try await status(path, pat.token).0 == 401)
            #expect(try await status(path, "kh_svc_not-a-real-token").0 == 401)
            #expect(try await status(path, reader).0 == 403)
            #expect(try await status(path, scopedToken).0 == 404)
            #expect(try await status("/gateway/\(UUID().uuidString.lowercased())/v1/chat/completions", token).0 == 404)
            #expect(try await status("/gateway/not-a-uuid/v1/chat/completions", token).0 == 404)
            #expect(try await status("/gateway/\(aws)/v1/chat/completions", token).0 == 400)
            #expect(try await status("/gateway/\(openai)/v1/%2e%2e/%2e%2e/aws", token).0 == 400)
            let disabled = try await api.request(
                .patch, "/api/integrations/\(openai)", auth: user.session, json: ["enabled": false])
            #expect(disabled.status == .ok)
            let (code, body) = try await status(path, token)
            #expect(code == 409 && body.contains("integration_disabled"))
            #expect(fakes.modelCalls.isEmpty)
            // A scoped token works in its own workspace.
            let teamOpenAI = try await integration(
                api, user, type: "openai", key: FakeProviders.openAIKey, workspace: org)
            #expect(try await status("/gateway/\(teamOpenAI)/v1/chat/completions", scopedToken).0 == 200)
            #expect(fakes.modelCalls.count == 1)
        }
    }

    /// Waits, if needed, so that the next few seconds stay within one clock minute (per-minute windows).
    func awayFromMinuteEnd() async throws {
        let second = Int(Date().timeIntervalSince1970) % 60
        if second >= 50 { try await Task.sleep(for: .seconds(61 - second)) }
    }

    @Test(
        "over a rate limit or a spent budget, the request is answered 429 before the provider sees it; 80 % warns once",
        arguments: GatewayFront.allCases)
    func limits(front: GatewayFront) async throws {
        try await withGateway(front: front) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, type: "openai", key: FakeProviders.openAIKey)
            let chat: [String: Any] = ["model": "gpt-4o", "messages": []]
            let bearer = [("authorization", "Bearer \(token)")]
            let path = "/gateway/\(openai)/v1/chat/completions"

            // Two requests a minute.
            try await awayFromMinuteEnd()
            let set = try await api.request(
                .put, "/api/integrations/\(openai)/limits", auth: user.session, json: ["requests_per_minute": 2])
            #expect(set.status == .ok, "\(set.text)")
            #expect(set.json["requests_per_minute"] as? Int == 2 && set.json["monthly_budget_usd"] is NSNull)
            #expect(try await caller.send(path, headers: bearer, json: chat).status == 200)
            #expect(try await caller.send(path, headers: bearer, json: chat).status == 200)
            let limited = try await caller.send(path, headers: bearer, json: chat)
            #expect(limited.status == 429 && limited.body.contains("\"rate_limited\""))
            #expect(Int(limited.headers.first(name: "retry-after") ?? "") ?? 0 >= 1)
            #expect(fakes.modelCalls.count == 2)

            // A budget of one cent: each chat costs 0.007 dollars, so the third request finds it spent.
            let budget = try await api.request(
                .put, "/api/integrations/\(openai)/limits", auth: user.session, json: ["monthly_budget_usd": 0.01])
            #expect(
                budget.json["monthly_budget_usd"] as? Double == 0.01 && budget.json["requests_per_minute"] is NSNull)
            func spent(atLeast micros: Int) async throws -> [String: Any] {
                for _ in 0..<100 {
                    let standing = try await api.request(.get, "/api/integrations/\(openai)/limits", auth: user.session)
                        .json
                    if Int(((standing["spent_this_month_usd"] as? Double) ?? 0) * 1_000_000 + 0.5) >= micros {
                        return standing
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
                throw TestSetupError("spending did not reach \(micros)")
            }
            // The two chats above already spent 0.014 dollars.
            let standing = try await spent(atLeast: 14_000)
            #expect(standing["warning"] as? Bool == true && standing["budget_used_percent"] as? Int == 140)
            try await Task.sleep(for: .milliseconds(1_100))  // the instance's cached spending expires
            let refused = try await caller.send(path, headers: bearer, json: chat)
            #expect(refused.status == 429 && refused.body.contains("\"budget_exceeded\""), "\(refused.body)")
            #expect(Int(refused.headers.first(name: "retry-after") ?? "") ?? 0 > 60)
            #expect(try await caller.send(path, headers: bearer, json: chat).status == 429)
            #expect(fakes.modelCalls.count == 2)
            let warnings =
                try await api.request(.get, "/api/audit?limit=200", auth: user.session).json["events"]
                as? [[String: Any]] ?? []
            #expect(warnings.filter { $0["action"] as? String == "usage.budget.warning" }.count == 1)

            // Lifting the integration's budget lets it through; the workspace's budget then stops it.
            #expect(
                try await api.request(.put, "/api/integrations/\(openai)/limits", auth: user.session, json: [:]).status
                    == .ok)
            #expect(try await caller.send(path, headers: bearer, json: chat).status == 200)
            let workspace = try await api.request(
                .put, "/api/limits", auth: user.session, json: ["monthly_budget_usd": 0.001])
            #expect(workspace.status == .ok && workspace.json["warning"] as? Bool == true)
            try await Task.sleep(for: .milliseconds(2_100))
            let workspaceRefused = try await caller.send(path, headers: bearer, json: chat)
            #expect(workspaceRefused.status == 429 && workspaceRefused.body.contains("workspace"))
            #expect(fakes.modelCalls.count == 3)

            // Bad limits change nothing; a viewer cannot set them.
            let invalid = try await api.request(
                .put, "/api/limits", auth: user.session, json: ["monthly_budget_usd": -1, "requests_per_minute": 1.5])
            #expect(invalid.status == .unprocessableContent)
            #expect(invalid.fields.keys.sorted() == ["monthly_budget_usd", "requests_per_minute"])
            #expect(
                try await api.request(.get, "/api/limits", auth: user.session).json["monthly_budget_usd"] as? Double
                    == 0.001)
            let stranger = try await api.user()
            #expect(
                try await api.request(.get, "/api/integrations/\(openai)/limits", auth: stranger.session).status
                    == .notFound)
        }
    }

    @Test("two instances on one PostgreSQL share the per-minute counters")
    func sharedCounters() async throws {
        guard TestDatabase.all.contains(.postgres) else { return }
        let handle = try await TestDatabase.postgres.make()
        let second = try await Database.open(
            handle.location, searchPath: [try #require(handle.schema)], logger: .init(label: "test"))
        do {
            let logger = Logger(label: "test")
            let keyring = try await LiveKeyring.open(
                source: Fixtures.environmentKeyring(), database: handle.database, allowCreate: true, logger: logger)
            func budgets(_ database: Database) async throws -> Budgets {
                let audit = SQLAuditLog(
                    database: database, keys: try await AuditKeys.open(database: database, keyring: keyring))
                return Budgets(
                    store: SQLLimitStore(
                        database: database, audit: audit, usage: SQLUsageStore(database: database, audit: audit)))
            }
            let (one, two) = (try await budgets(handle.database), try await budgets(second))
            let owner = UUID()
            let integration = Integration(
                id: UUID(), ownerID: owner, name: "shared", type: .openai, status: .connected, enabled: true,
                config: [:],
                credentialHint: nil, credentialVersion: 1, errorMessage: nil, lastVerifiedAt: nil, lastUsedAt: nil,
                createdAt: Date(), updatedAt: Date())
            let audit = SQLAuditLog(
                database: handle.database, keys: try await AuditKeys.open(database: handle.database, keyring: keyring))
            try await SQLLimitStore(
                database: handle.database, audit: audit, usage: SQLUsageStore(database: handle.database, audit: audit)
            )
            .setLimits(UsageLimits(requestsPerMinute: 3), subject: integration.id, ownerID: owner, actor: .system)
            try await awayFromMinuteEnd()
            var admitted = 0
            for index in 0..<6 {
                if (try? await (index.isMultiple(of: 2) ? one : two).admit(integration)) != nil { admitted += 1 }
            }
            #expect(admitted == 3)
        } catch {
            await second.shutdown()
            await handle.close()
            throw error
        }
        await second.shutdown()
        await handle.close()
    }

    @Test(
        """
        a fallback route tries the next integration after a 429, a \
        5xx or an unreachable provider, never after bytes were sent
        """, arguments: GatewayFront.allCases)
    func fallback(front: GatewayFront) async throws {
        try await withGateway(front: front) { api, fakes, caller, user, token in
            let throttled = try await integration(api, user, type: "openai", key: FakeProviders.openAIThrottledKey)
            let failing = try await integration(api, user, type: "openai", key: FakeProviders.openAIFailingKey)
            let breaking = try await integration(api, user, type: "openai", key: FakeProviders.openAIBreakingKey)
            let good = try await integration(api, user, type: "openai", key: FakeProviders.openAIKey)
            let disabled = try await integration(api, user, type: "openai", key: FakeProviders.openAIKey)
            _ = try await api.request(
                .patch, "/api/integrations/\(disabled)", auth: user.session, json: ["enabled": false])
            func route(_ name: String, _ ids: [String]) async throws {
                let put = try await api.request(
                    .put, "/api/routes/\(name)", auth: user.session, json: ["integration_ids": ids])
                #expect(put.status == .ok, "\(put.text)")
            }
            try await route("chat", [disabled, throttled, failing, good])
            try await route("breaks", [breaking, good])
            let workspace = [("authorization", "Bearer \(token)"), ("keyhaven-workspace", user.id.lowercasedText)]
            let chat: [String: Any] = ["model": "gpt-4o", "messages": []]
            let answered = try await caller.send(
                "/gateway/route/chat/v1/chat/completions", headers: workspace, json: chat)
            #expect(answered.status == 200, "\(answered.body)")
            #expect(answered.headers.first(name: "keyhaven-integration") == good)
            // The disabled one was skipped without a request; the other two were asked once each.
            #expect(
                fakes.modelCalls.map { $0.headers["authorization"] ?? "" } == [
                    "Bearer \(FakeProviders.openAIThrottledKey)", "Bearer \(FakeProviders.openAIFailingKey)",
                    "Bearer \(FakeProviders.openAIKey)",
                ])

            // A stream that breaks after its first bytes is the caller's to see; the next integration is not asked.
            let before = fakes.modelCalls.count
            var request = HTTPClientRequest(url: caller.base + "/gateway/route/breaks/v1/chat/completions")
            request.method = .POST
            for (name, value) in workspace { request.headers.add(name: name, value: value) }
            request.body = .bytes(ByteBuffer(string: #"{"model":"gpt-4o","stream":true,"messages":[]}"#))
            let broken = try await caller.client.execute(request, timeout: .seconds(10))
            #expect(broken.status == .ok)
            #expect(broken.headers.first(name: "keyhaven-integration") == breaking)
            var received = ""
            do {
                for try await chunk in broken.body { received += String(buffer: chunk) }
            } catch {}
            #expect(received.contains("Hel"))
            try await Task.sleep(for: .milliseconds(200))
            #expect(fakes.modelCalls.count == before + 1)

            // Routes need a workspace, exist per workspace, and list only usable integrations.
            #expect(
                try await caller.send(
                    "/gateway/route/chat/v1/chat/completions", headers: [("authorization", "Bearer \(token)")],
                    json: chat
                ).status == 400)
            #expect(
                try await caller.send("/gateway/route/nope/v1/chat/completions", headers: workspace, json: chat).status
                    == 404)
            let listed = try await api.request(.get, "/api/routes", auth: user.session)
            #expect((listed.json["routes"] as? [[String: Any]])?.map { $0["name"] as? String } == ["breaks", "chat"])
            let stranger = try await api.user()
            let foreign = try await api.request(
                .put, "/api/routes/mine", auth: stranger.session, json: ["integration_ids": [good]])
            #expect(foreign.status == .notFound)
            #expect(try await api.request(.delete, "/api/routes/chat", auth: user.session).status == .noContent)
            #expect(
                try await caller.send("/gateway/route/chat/v1/chat/completions", headers: workspace, json: chat).status
                    == 404)
            #expect(fakes.unexpected == [])
        }
    }

    @Test("a provider that cannot be reached answers 502 and is counted", arguments: GatewayFront.allCases)
    func unreachable(front: GatewayFront) async throws {
        try await APIHarness.with(.sqlite, live: true, configure: { front.configure(&$0) }) { api in
            let user = try await api.user()
            let (_, token) = try await api.serviceToken(scopes: [.gatewayUse])
            let id = try await api.openAIIntegration(for: user.session)
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            defer { _ = client.shutdown() }
            let caller = GatewayCaller(client: client, base: try await api.gatewayBase(front))
            let answer = try await caller.send(
                "/gateway/\(id)/v1/chat/completions", headers: [("authorization", "Bearer \(token)")],
                json: ["model": "x"])
            #expect(answer.status == 502 && answer.body.contains("provider_unreachable"))
            let metrics = try await api.metrics().text
            #expect(metrics.contains(#"integration_type="openai",status="502"} 1"#))
        }
    }
}

/// Usage reported by backends that call providers themselves, and the analytics over it.
@Suite("Usage reports and analytics")
struct UsageReportTests {
    @Test(
        "a report is recorded once per idempotency key, priced, and summed by day, model and integration",
        arguments: TestDatabase.all)
    func reports(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let (_, token) = try await api.serviceToken(scopes: [.usageReport])
            let id = try await api.openAIIntegration(for: user.session)
            let report: [String: Any] = [
                "model": "gpt-4o", "input_tokens": 1_000, "cached_input_tokens": 400, "output_tokens": 500,
                "requests": 2, "idempotency_key": "batch-0001",
            ]
            let first = try await api.request(
                .post, "/api/integrations/\(id)/usage", auth: .bearer(token), json: report)
            #expect(first.status == .created, "\(first.text)")
            #expect(first.json["cost_micros"] as? Int == 7_000)
            let again = try await api.request(
                .post, "/api/integrations/\(id)/usage", auth: .bearer(token), json: report)
            #expect(again.status == .ok)
            #expect(again.json["id"] as? String == first.json["id"] as? String)
            var unknown = report
            unknown["model"] = "house-model-7"
            unknown["idempotency_key"] = "batch-0002"
            unknown["occurred_at"] = "2026-01-01T00:00:00Z"
            let yesterday = Date().addingTimeInterval(-86_400)
            unknown["occurred_at"] = yesterday.formatted(.iso8601)
            let unpriced = try await api.request(
                .post, "/api/integrations/\(id)/usage", auth: .bearer(token), json: unknown)
            #expect(unpriced.status == .created)
            #expect(unpriced.json["cost_micros"] is NSNull)

            let from = yesterday.utcDay
            let byModel = try await api.request(.get, "/api/usage?group_by=model&from=\(from)", auth: user.session)
            #expect(byModel.status == .ok, "\(byModel.text)")
            let total = byModel.json["total"] as? [String: Any]
            #expect(total?["requests"] as? Int == 4)
            #expect(total?["cost_micros"] as? Int == 7_000)
            #expect(total?["unpriced_requests"] as? Int == 2)
            let byDay = try await api.request(
                .get, "/api/usage?group_by=day&from=\(from)&integration_id=\(id)", auth: user.session)
            #expect((byDay.json["rows"] as? [Any])?.count == (from == Date().utcDay ? 1 : 2))
            let csv = try await api.request(
                .get, "/api/usage?group_by=model&from=\(from)", auth: user.session, headers: [.accept: "text/csv"])
            #expect(csv.headers[.contentType]?.hasPrefix("text/csv") == true)
            #expect(csv.text.hasPrefix("model,requests,"))
            #expect(csv.text.contains("gpt-4o,2,1000,400,0,500,0,0.007000,0\r\n"))

            // Refusals change nothing.
            var bad = report
            bad["idempotency_key"] = "batch-0003"
            bad["cached_input_tokens"] = 5_000
            bad["output_tokens"] = -1
            let invalid = try await api.request(.post, "/api/integrations/\(id)/usage", auth: .bearer(token), json: bad)
            #expect(invalid.status == .unprocessableContent)
            #expect(invalid.fields.keys.sorted() == ["output_tokens"])
            bad["output_tokens"] = 500
            let contradicting = try await api.request(
                .post, "/api/integrations/\(id)/usage", auth: .bearer(token), json: bad)
            #expect(contradicting.status == .conflict && contradicting.text.contains("parts of input_tokens"))
            bad["cached_input_tokens"] = 0
            bad["occurred_at"] = "2020-01-01T00:00:00Z"
            #expect(
                try await api.request(.post, "/api/integrations/\(id)/usage", auth: .bearer(token), json: bad).status
                    == .conflict)
            #expect(
                try await api.request(.post, "/api/integrations/\(id)/usage", auth: user.session, json: report).status
                    == .forbidden)
            let stranger = try await api.user()
            #expect(
                try await api.request(.get, "/api/usage?integration_id=\(id)", auth: stranger.session).status
                    == .notFound)
            #expect(try await api.request(.get, "/api/usage?from=2026-02-30", auth: user.session).status == .badRequest)
            let empty = try await api.request(.get, "/api/usage?from=2026-01-02&to=2026-01-01", auth: user.session)
            #expect(empty.status == .ok && (empty.json["rows"] as? [Any])?.isEmpty == true)
            let after = try await api.request(.get, "/api/usage?group_by=model&from=\(from)", auth: user.session)
            #expect((after.json["total"] as? [String: Any])?["requests"] as? Int == 4)
        }
    }
}

/// The model price table an operator imports, and a workspace's negotiated prices (SPEC §13).
@Suite("Prices")
struct PriceImportTests {
    @Test(
        "negotiated prices replace the table's in their workspace only; bad ones change nothing",
        arguments: TestDatabase.all)
    func negotiated(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let other = try await api.user()
            let (_, token) = try await api.serviceToken(scopes: [.usageReport])
            let mine = try await api.openAIIntegration(for: user.session)
            let theirs = try await api.openAIIntegration(for: other.session)
            let workspace = user.id.lowercasedText
            // gpt-4o at $1 input, $4 output, $0.50 cached per million tokens.
            let put = try await api.request(
                .put, "/api/orgs/\(workspace)/prices", auth: user.session,
                json: [
                    "prices": [
                        [
                            "model": "GPT-4o", "input_usd_per_million": 1, "output_usd_per_million": 4,
                            "cached_input_usd_per_million": 0.5,
                        ]
                    ]
                ])
            #expect(put.status == .ok, "\(put.text)")
            #expect((put.json["prices"] as? [[String: Any]])?.first?["model"] as? String == "gpt-4o")
            let report: [String: Any] = [
                "model": "gpt-4o", "input_tokens": 1_000, "cached_input_tokens": 400, "output_tokens": 500,
                "idempotency_key": "n-1",
            ]
            // 600 × 1 + 400 × 0.5 + 500 × 4 micro-dollars, against 7,000 at the table's price.
            let negotiated = try await api.request(
                .post, "/api/integrations/\(mine)/usage", auth: .bearer(token), json: report)
            #expect(negotiated.json["cost_micros"] as? Int == 2_800)
            let listed = try await api.request(
                .post, "/api/integrations/\(theirs)/usage", auth: .bearer(token), json: report)
            #expect(listed.json["cost_micros"] as? Int == 7_000)

            let bad = try await api.request(
                .put, "/api/orgs/\(workspace)/prices", auth: user.session,
                json: [
                    "prices": [
                        ["model": "gpt-4o", "input_usd_per_million": -1, "output_usd_per_million": 4],
                        ["model": "GPT-4O", "input_usd_per_million": 1, "output_usd_per_million": 1],
                    ]
                ])
            #expect(bad.status == .unprocessableContent)
            #expect(bad.fields.keys.sorted() == ["prices[0].input_usd_per_million"])
            let twice = try await api.request(
                .put, "/api/orgs/\(workspace)/prices", auth: user.session,
                json: [
                    "prices": [
                        ["model": "gpt-4o", "input_usd_per_million": 1, "output_usd_per_million": 4],
                        ["model": "GPT-4O", "input_usd_per_million": 1, "output_usd_per_million": 1],
                    ]
                ])
            #expect(twice.status == .conflict)
            let after = try await api.request(.get, "/api/orgs/\(workspace)/prices", auth: user.session)
            #expect((after.json["prices"] as? [[String: Any]])?.first?["input_usd_per_million"] as? Double == 1)
            #expect(
                try await api.request(.get, "/api/orgs/\(workspace)/prices", auth: other.session).status == .notFound)
            #expect(
                try await api.request(.put, "/api/orgs/\(workspace)/prices", auth: other.session, json: ["prices": []])
                    .status == .notFound)
        }
    }

    @Test("an imported table is checked first, then used by running servers once they look again")
    func importTable() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            let (_, token) = try await api.serviceToken(scopes: [.usageReport])
            let id = try await api.openAIIntegration(for: user.session)
            var configuration = api.runtime.configuration
            configuration.database = api.handle.location
            let refused = Data(#"{"gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": "free"}}"#.utf8)
            await #expect(throws: KeyhavenError.self) {
                try await KeyhavenOperations.importPrices(refused, configuration, logger: Logger(label: "test"))
            }
            #expect(try await api.runtime.priceStore.importedTableHash() == nil)
            let table = Data(
                #"""
                {"house-model-7": {"litellm_provider": "openai", \#
                "input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06}}
                """#
                .utf8)
            let (models, _) = try await KeyhavenOperations.importPrices(
                table, configuration, logger: Logger(label: "test"))
            #expect(models == 1)
            // The running server looks again (every 30 s; here at once).
            #expect(await api.runtime.gateway.prices.refresh())
            let report: [String: Any] = [
                "model": "house-model-7", "input_tokens": 1_000, "output_tokens": 500, "idempotency_key": "i-1",
            ]
            let priced = try await api.request(
                .post, "/api/integrations/\(id)/usage", auth: .bearer(token), json: report)
            #expect(priced.json["cost_micros"] as? Int == 6_000)
            // The imported table replaces the bundled one: gpt-4o has no price now.
            var other = report
            other["model"] = "gpt-4o"
            other["idempotency_key"] = "i-2"
            #expect(
                try await api.request(.post, "/api/integrations/\(id)/usage", auth: .bearer(token), json: other).json[
                    "cost_micros"] is NSNull)
            // The refused import wrote nothing; the accepted one is audited once.
            let imports = try await api.handle.database.withConnection { sql in
                try await sql.raw("SELECT id FROM audit_events WHERE action = 'prices.import'").all().count
            }
            #expect(imports == 1)
        }
    }
}
