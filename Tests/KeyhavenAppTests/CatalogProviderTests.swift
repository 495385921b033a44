import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenGateway
import KeyhavenStorage
import KeyhavenTestSupport
import SQLKit
import Testing

/// The catalog's OpenAI-compatible providers (SPEC §16) end to end, each against its fake, which checks the key the
/// way the real service reads it.
@Suite("Catalog providers")
struct CatalogProviderTests: GatewayHarness {
    @Test(
        """
        each OpenAI-compatible provider: created through the API, verified (a refused key is an error whose message \
        holds no run of the key), unary and streamed through the gateway, usage priced from the table, and a spent \
        budget answers 429 before the provider sees the request
        """, arguments: TestDatabase.all)
    func endToEnd(kind: TestDatabase) async throws {
        try await withGateway(kind, configure: { $0.runVerificationWorker = true }) { api, fakes, caller, user, token in
            let bearer = [("authorization", "Bearer \(token)")]
            var keys = [token]
            for provider in FakeProviders.catalogProviders {
                let type = try #require(IntegrationType(rawValue: provider.id), "\(provider.id) is in the catalog")
                keys.append(provider.key)
                let id = try await integration(api, user, type: provider.id, key: provider.key)
                let connected = try await api.settled(id, auth: user.session)
                #expect(connected["status"] as? String == "connected", "\(provider.id): \(connected)")

                // A key of the right shape that the provider refuses: an error, its echo of the key removed.
                let wrong = String(provider.key.dropLast(6)) + "WRONG0"
                keys.append(wrong)
                let refusedID = try await integration(api, user, type: provider.id, key: wrong)
                let refused = try await api.settled(refusedID, auth: user.session)
                #expect(refused["status"] as? String == "error", "\(provider.id): \(refused)")
                let message = refused["error_message"] as? String ?? ""
                #expect(message.contains("Invalid API key"), "\(provider.id): \(message)")
                #expect(!message.contains(String(wrong.suffix(12))), "\(provider.id) echoed the key")

                // Unary and streamed, with the stored key injected.
                let path = "/gateway/\(id)\(provider.chatPath)"
                let unary = try await caller.send(
                    path, headers: bearer,
                    json: ["model": provider.model, "messages": [["role": "user", "content": "Hi"]]])
                #expect(
                    unary.status == 200 && unary.body.contains(provider.usageMarker),
                    "\(provider.id): \(unary.body)")
                let streamed = try await caller.send(
                    path, headers: bearer,
                    json: ["model": provider.model, "stream": true, "messages": [["role": "user", "content": "Hi"]]])
                #expect(streamed.status == 200 && streamed.body.contains(provider.streamEnd), "\(provider.id)")
                #expect(streamed.body.contains("Hel") && streamed.body.contains("lo"))
                let rules = try #require(type.entry?.gateway)
                if rules.metered.first(where: { $0.path.matches(provider.chatPath) })?.streamUsageOption == true {
                    // Keyhaven asked for the usage chunk on the caller's behalf, and kept it to itself.
                    #expect(!streamed.body.contains("prompt_tokens"), "\(provider.id)")
                }

                // Both priced from the price table, by the provider's own model name.
                let usage = try await usageRows(api, user, integration: id, requests: 2)
                let price = try PriceTable.bundled().price(type, model: provider.model)
                if provider.id == "openrouter" {
                    // Not in the price table: recorded, unpriced.
                    #expect(price == nil)
                } else {
                    let each = try #require(price, "\(provider.id) \(provider.model) has a price").cost(
                        of: TokenUsage(inputTokens: 1_000, outputTokens: 500))
                    #expect(usage["cost_micros"] as? Int == Int(2 * each), "\(provider.id): \(usage)")
                }
                #expect(usage["input_tokens"] as? Int == 2_000 && usage["output_tokens"] as? Int == 1_000)

                // A budget spent (for the unpriced provider, a token limit): 429, and the provider sees nothing
                // more.
                let before = fakes.modelCalls.count
                let priced = price != nil
                let limit = try await api.request(
                    .put, "/api/integrations/\(id)/limits", auth: user.session,
                    json: priced ? ["monthly_budget_usd": 0.000001] : ["tokens_per_minute": 100])
                #expect(limit.status == .ok, "\(limit.text)")
                let chat: [String: Any] = ["model": provider.model, "messages": [["role": "user", "content": "Hi"]]]
                var allowed = 0
                if priced {
                    try await Task.sleep(for: .milliseconds(1_100))  // the instance's cached spending expires
                } else {
                    // Tokens count from the moment a token limit applies: the next answer spends the minute's (a
                    // new minute starting in between gives one more).
                    for _ in 0..<3 where try await caller.send(path, headers: bearer, json: chat).status == 200 {
                        allowed += 1
                        try await Task.sleep(for: .milliseconds(200))
                    }
                    #expect((1...2).contains(allowed), "\(provider.id): \(allowed)")
                }
                let over = try await caller.send(path, headers: bearer, json: chat)
                #expect(over.status == 429, "\(provider.id): \(over.status) \(over.body)")
                #expect(over.body.contains(priced ? "budget_exceeded" : "rate_limited"), "\(provider.id): \(over.body)")
                #expect(fakes.modelCalls.count == before + allowed)
            }
            #expect(fakes.unexpected == [])

            // No key in an answer, a log line or an audit row.
            let logs = api.logs.all.map { Data($0.utf8) }
            let rows = try await api.handle.database.withConnection { sql in
                try await sql.raw("SELECT * FROM audit_events").all().map {
                    Data(((try? SQLAuditLog.eventText($0)) ?? "").utf8)
                }
            }
            for key in keys { #expect(!containsAnywhere(Data(key.utf8), in: logs + rows), "a key leaked") }
        }
    }

    @Test(
        """
        Azure OpenAI: the resource name makes the endpoint, the key goes in api-key, the check lists deployments, \
        deployment paths are forwarded with the integration's api-version when the caller sends none, usage is \
        priced at Azure's prices, and a resource name that is not one is refused
        """, arguments: TestDatabase.all)
    func azureOpenAI(kind: TestDatabase) async throws {
        try await withGateway(kind, configure: { $0.runVerificationWorker = true }) { api, fakes, caller, user, token in
            func create(_ config: [String: Any], key: String = FakeProviders.azureOpenAIKey) async throws -> APIResponse
            {
                try await api.request(
                    .post, "/api/integrations", auth: user.session,
                    json: [
                        "name": "azure \(UUID().uuidString.prefix(6))", "type": "azure_openai", "credentials": key,
                        "config": config,
                    ])
            }
            for bad: [String: Any] in [
                [:], ["resource": "Not A Label"], ["resource": "a.b"], ["resource": "-x"],
                ["resource": "fake-resource", "api_version": "latest"], ["resource": "fake-resource", "region": "x"],
            ] {
                let refused = try await create(bad)
                #expect(refused.status == .unprocessableContent, "\(bad): \(refused.text)")
            }
            let created = try await create(["resource": FakeProviders.azureOpenAIResource])
            #expect(created.status == .created, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            #expect(try await api.settled(id, auth: user.session)["status"] as? String == "connected")
            // Another resource: the fake does not know it, and says so.
            let elsewhere = try #require(try await create(["resource": "other-resource"]).json["id"] as? String)
            #expect(try await api.settled(elsewhere, auth: user.session)["status"] as? String == "error")

            let bearer = [("authorization", "Bearer \(token)")]
            let chat: [String: Any] = ["messages": [["role": "user", "content": "Hi"]]]
            let path = "/gateway/\(id)/openai/deployments/\(FakeProviders.azureOpenAIDeployment)/chat/completions"
            let unary = try await caller.send(path, headers: bearer, json: chat)
            #expect(unary.status == 200 && unary.body.contains("\"prompt_tokens\":1000"), "\(unary.body)")
            let pinned = try await caller.send(path + "?api-version=2025-01-01-preview", headers: bearer, json: chat)
            #expect(pinned.status == 200)
            let streamed = try await caller.send(path, headers: bearer, json: chat.merging(["stream": true]) { $1 })
            #expect(streamed.body.hasSuffix("data: [DONE]\n\n") && !streamed.body.contains("prompt_tokens"))
            let calls = fakes.modelCalls.filter { $0.path.hasPrefix("/azure_openai/") }
            #expect(
                calls.map(\.query) == [
                    "api-version=2024-10-21", "api-version=2025-01-01-preview", "api-version=2024-10-21",
                ])
            #expect(
                calls.allSatisfy {
                    $0.headers["api-key"] == FakeProviders.azureOpenAIKey && $0.headers["authorization"] == nil
                })
            #expect(fakes.unexpected == [])

            // gpt-4o-2024-08-06 at Azure's prices: 1000 × 2.5 + 500 × 10 micro-dollars, three times.
            let usage = try await usageRows(api, user, integration: id, requests: 3)
            #expect(usage["cost_micros"] as? Int == 3 * 7_500, "\(usage)")
            let read = try await api.request(.get, "/api/integrations/\(id)", auth: user.session)
            #expect(
                (read.json["config"] as? [String: Any])?["resource"] as? String == FakeProviders.azureOpenAIResource)
        }
    }

    @Test(
        """
        Vertex AI: a service account in a project and region, checked with a token from the account's assertion; \
        the gateway injects a short-lived token (one minted, then reused) and meters Gemini's usage at Vertex's \
        prices; an account the token endpoint does not trust is an error
        """, arguments: TestDatabase.all)
    func vertexAI(kind: TestDatabase) async throws {
        try await withGateway(kind, configure: { $0.runVerificationWorker = true }) { api, fakes, caller, user, token in
            func create(_ account: [String: JSONValue], _ config: [String: Any]) async throws -> APIResponse {
                let accountJSON = try JSONSerialization.jsonObject(
                    with: JSONEncoder().encode(JSONValue.object(account)))
                return try await api.request(
                    .post, "/api/integrations", auth: user.session,
                    json: [
                        "name": "vertex \(UUID().uuidString.prefix(6))", "type": "vertex_ai",
                        "credentials": accountJSON,
                        "config": config,
                    ])
            }
            for bad: [String: Any] in [[:], ["project": "Fake Project"], ["project": "fake-project", "region": "EU"]] {
                let refused = try await create(fakes.googleAccount, bad)
                #expect(refused.status == .unprocessableContent, "\(bad): \(refused.text)")
            }
            let config: [String: Any] = ["project": FakeProviders.vertexProject, "region": "europe-west4"]
            let created = try await create(fakes.googleAccount, config)
            #expect(created.status == .created, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            #expect(try await api.settled(id, auth: user.session)["status"] as? String == "connected")
            let stranger = try #require(try await create(fakes.googleStrangerAccount, config).json["id"] as? String)
            #expect(try await api.settled(stranger, auth: user.session)["status"] as? String == "error")

            let minted = fakes.googleTokensIssued
            let bearer = [("authorization", "Bearer \(token)")]
            let model = "/v1/projects/\(FakeProviders.vertexProject)/locations/europe-west4/publishers/google/models/"
            let unary = try await caller.send(
                "/gateway/\(id)\(model)gemini-2.5-flash:generateContent", headers: bearer, json: ["contents": []])
            #expect(unary.status == 200 && unary.body.contains("usageMetadata"), "\(unary.body)")
            let streamed = try await caller.send(
                "/gateway/\(id)\(model)gemini-2.5-flash:streamGenerateContent?alt=sse", headers: bearer,
                json: ["contents": []])
            #expect(streamed.status == 200 && streamed.body.contains("lo"), "\(streamed.body)")
            // One token for both, from the account's own assertion; never the caller's token or an API key.
            #expect(fakes.googleTokensIssued == minted + 1)
            let calls = fakes.modelCalls.filter { $0.path.hasPrefix("/vertex/") }
            #expect(
                calls.count == 2
                    && calls.allSatisfy { $0.headers["authorization"]?.hasPrefix("Bearer ya29.fake-") == true })
            #expect(fakes.unexpected == [])

            let usage = try await usageRows(api, user, integration: id, requests: 2)
            let price = try #require(
                try PriceTable.bundled().price(IntegrationType(rawValue: "vertex_ai")!, model: "gemini-2.5-flash"))
            let gemini = FakeProviders.ModelUsage.gemini
            // The stream's two events repeat the counts; the last is the total.
            let each = price.cost(
                of: TokenUsage(
                    inputTokens: Int64(gemini.prompt), cachedInputTokens: Int64(gemini.cached),
                    outputTokens: Int64(gemini.candidates + gemini.thoughts), reasoningTokens: Int64(gemini.thoughts)))
            #expect(usage["cost_micros"] as? Int == Int(2 * each), "\(usage)")
        }
    }

    /// The usage of one integration, once it counts `requests` requests.
    func usageRows(_ api: APIHarness, _ user: TestUser, integration: String, requests: Int) async throws
        -> [String: Any]
    {
        for _ in 0..<100 {
            let response = try await api.request(.get, "/api/usage?integration_id=\(integration)", auth: user.session)
            let total = response.json["total"] as? [String: Any] ?? [:]
            if total["requests"] as? Int ?? -1 >= requests { return total }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestSetupError("usage did not reach \(requests) requests")
    }
}
