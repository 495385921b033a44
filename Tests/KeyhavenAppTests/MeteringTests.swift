import AsyncHTTPClient
import Foundation
import KeyhavenCore
import KeyhavenGateway
import KeyhavenStorage
import KeyhavenTestSupport
import NIOCore
import NIOHTTP1
import Prometheus
import SQLKit
import Synchronization
import Testing

@testable import KeyhavenApp

/// Usage that cannot be left unmetered (SPEC §13): whatever the request's framing or spelling, however its answer
/// ends, and whichever endpoint it calls, a gateway request is metered, estimated or refused; usage reports need
/// their own scope; one bad usage event never stops the others.
@Suite("Metering")
struct MeteringTests: GatewayHarness {
    /// Runs `body` with a live server on `kind` whose providers are the fakes, a user, and a `gateway:use` token;
    /// metered bodies are read up to ``inspectLimit``.
    func withMeteredGateway(
        _ kind: TestDatabase = .sqlite, front: GatewayFront,
        configure: @escaping @Sendable (inout KeyhavenConfiguration) -> Void = { _ in },
        _ body: @Sendable (APIHarness, FakeProviders, GatewayCaller, TestUser, String) async throws -> Void
    ) async throws {
        try await withGateway(
            kind, front: front,
            configure: {
                $0.gatewayInspectLimit = Self.inspectLimit
                configure(&$0)
            }, body)
    }

    /// One stored usage event.
    struct Recorded: Equatable {
        var model: String?
        var input: Int64
        var output: Int64
        var cost: Int64?
        var estimated: Bool
    }

    /// The usage events of `integration`, once there are `count` of them.
    func events(_ api: APIHarness, integration: String, count: Int) async throws -> [Recorded] {
        let id = try #require(UUID(uuidString: integration))
        for _ in 0..<200 {
            let rows = try await api.handle.database.withConnection { sql in
                try await sql.raw(
                    """
                    SELECT model, input_tokens, output_tokens, cost_micros, estimated FROM usage_events
                    WHERE integration_id = \(bind: id) ORDER BY occurred_at
                    """
                ).all().map { row in
                    Recorded(
                        model: try row.decode(column: "model", as: String?.self),
                        input: try row.decode(column: "input_tokens", as: Int64.self),
                        output: try row.decode(column: "output_tokens", as: Int64.self),
                        cost: try row.decode(column: "cost_micros", as: Int64?.self),
                        estimated: try row.decode(column: "estimated", as: Bool.self))
                }
            }
            if rows.count >= count { return rows }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestSetupError("usage of \(integration) did not reach \(count) events")
    }

    /// A smaller bound than the default, so that bodies over it stay quick to send on two busy cores.
    static let inspectLimit = 256 << 10

    /// gpt-4o-2024-08-06 as the fake reports it: 600 × 2.5 + 400 × 1.25 + 500 × 10 micro-dollars.
    static let chat = Recorded(model: "gpt-4o-2024-08-06", input: 1_000, output: 500, cost: 7_000, estimated: false)

    @Test(
        "a streamed chat completion is metered whether its body is chunked or spells stream with an escape",
        arguments: GatewayFront.allCases)
    func streamingWhateverTheFraming(front: GatewayFront) async throws {
        try await withMeteredGateway(front: front) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, key: FakeProviders.openAIKey)
            let url = caller.base + "/gateway/\(openai)/v1/chat/completions"

            // A chunked body (no Content-Length), in three pieces.
            var chunked = HTTPClientRequest(url: url)
            chunked.method = .POST
            chunked.headers.add(name: "authorization", value: "Bearer \(token)")
            chunked.headers.add(name: "content-type", value: "application/json")
            let pieces = [#"{"model":"gpt-4o","#, #""stream":true,"#, #""messages":[{"role":"user","content":"Hi"}]}"#]
            chunked.body = .stream(
                AsyncStream<ByteBuffer> { continuation in
                    for piece in pieces { continuation.yield(ByteBuffer(string: piece)) }
                    continuation.finish()
                }, length: .unknown)
            let streamed = try await caller.client.execute(chunked, timeout: .seconds(30))
            #expect(streamed.status == .ok)
            let text = String(buffer: try await streamed.body.collect(upTo: 1 << 20))
            #expect(text.hasSuffix("data: [DONE]\n\n"))
            // The usage chunk Keyhaven asked for stays with Keyhaven.
            #expect(!text.contains("prompt_tokens"))

            // "str\u0065am" is "stream" to the provider's JSON parser, so it is to Keyhaven's.
            let escaped = try await caller.send(
                "/gateway/\(openai)/v1/chat/completions", headers: [("authorization", "Bearer \(token)")],
                body: Data(#"{"model":"gpt-4o","str\u0065am":true,"messages":[{"role":"user","content":"Hi"}]}"#.utf8))
            #expect(escaped.status == 200 && escaped.body.hasSuffix("data: [DONE]\n\n"), "\(escaped.body)")
            #expect(!escaped.body.contains("prompt_tokens"))

            #expect(try await events(api, integration: openai, count: 2) == [Self.chat, Self.chat])
            #expect(fakes.unexpected == [])
        }
    }

    /// A chat completion's body of exactly `bytes` bytes.
    static func chatBody(bytes: Int) -> Data {
        let head = #"{"model":"gpt-4o","messages":[{"role":"user","content":""#
        let tail = #""}]}"#
        return Data(
            (head + String(repeating: "a", count: max(0, bytes - head.utf8.count - tail.utf8.count)) + tail).utf8)
    }

    @Test(
        """
        metered bodies and JSON answers are held within the process's memory budget: past it \
        a metered request answers 503, and an answer too large to hold is charged an estimate
        """, arguments: GatewayFront.allCases)
    func memoryBudget(front: GatewayFront) async throws {
        let body = Self.chatBody(bytes: 200)
        // Room for that body, and for less than any answer.
        try await withMeteredGateway(front: front, configure: { $0.bufferedBodyMemory = 210 }) {
            api, fakes, caller, user, token in
            let openai = try await integration(api, user, key: FakeProviders.openAIKey)
            let path = "/gateway/\(openai)/v1/chat/completions"
            let bearer = [("authorization", "Bearer \(token)"), ("content-type", "application/json")]
            let answered = try await caller.send(path, headers: bearer, body: body)
            #expect(answered.status == 200, "\(answered.body)")
            let recorded = try await events(api, integration: openai, count: 1)
            #expect(recorded.count == 1 && recorded[0].estimated && recorded[0].input > 0, "\(recorded)")

            let refused = try await caller.send(path, headers: bearer, body: Self.chatBody(bytes: 400))
            #expect(refused.status == 503, "\(refused.body)")
            #expect(fakes.modelCalls.count == 1, "the refused request was not forwarded")
            #expect(api.runtime.bufferedBodies.reserved == 0, "every reservation was given back")
        }
    }

    @Test(
        "under a budget a body too large to meter is refused with 413; without one it is forwarded and estimated",
        arguments: GatewayFront.allCases)
    func tooLargeToMeter(front: GatewayFront) async throws {
        try await withMeteredGateway(front: front) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, key: FakeProviders.openAIKey)
            let path = "/gateway/\(openai)/v1/chat/completions"
            let bearer = [("authorization", "Bearer \(token)")]
            let large = Data(repeating: UInt8(ascii: " "), count: Self.inspectLimit + 1)

            // No limit: the body goes on as it came.
            let forwarded = try await caller.send(path, headers: bearer, body: large)
            #expect(forwarded.status == 200, "\(forwarded.body)")
            #expect(fakes.modelCalls.last?.bodyBytes == large.count)

            let budget = try await api.request(
                .put, "/api/integrations/\(openai)/limits", auth: user.session, json: ["monthly_budget_usd": 100])
            #expect(budget.status == .ok)
            let refused = try await caller.send(path, headers: bearer, body: large)
            #expect(refused.status == 413 && refused.body.contains("\"payload_too_large\""), "\(refused.body)")
            // Chunked, its size is learnt by reading it: refused all the same.
            var chunked = HTTPClientRequest(url: caller.base + path)
            chunked.method = .POST
            chunked.headers.add(name: "authorization", value: "Bearer \(token)")
            let half = ByteBuffer(bytes: large.prefix(large.count / 2 + 1))
            chunked.body = .stream(
                AsyncStream<ByteBuffer> { continuation in
                    continuation.yield(half)
                    continuation.yield(half)
                    continuation.finish()
                }, length: .unknown)
            let chunkedAnswer = try? await caller.client.execute(chunked, timeout: .seconds(30))
            if let chunkedAnswer {
                #expect(chunkedAnswer.status.code == 413)
            }
            // A token limit needs metering too; requests per minute alone do not.
            _ = try await api.request(
                .put, "/api/integrations/\(openai)/limits", auth: user.session, json: ["tokens_per_minute": 1_000_000])
            #expect(try await caller.send(path, headers: bearer, body: large).status == 413)
            _ = try await api.request(
                .put, "/api/integrations/\(openai)/limits", auth: user.session, json: ["requests_per_minute": 1_000])
            #expect(try await caller.send(path, headers: bearer, body: large).status == 200)
            #expect(fakes.modelCalls.count == 2)

            // Forwarded without being read, the bodies were still metered from the answers' usage.
            let recorded = try await events(api, integration: openai, count: 2)
            #expect(recorded.allSatisfy { $0 == Self.chat })
            #expect(fakes.unexpected == [])
        }
    }

    @Test(
        """
        a stream the provider breaks off, or the caller leaves during or \
        before the answer, is charged the input estimate, marked estimated
        """, arguments: GatewayFront.allCases)
    func answersWithoutUsage(front: GatewayFront) async throws {
        try await withMeteredGateway(front: front) { api, fakes, caller, user, token in
            let breaking = try await integration(api, user, key: FakeProviders.openAIBreakingKey)
            let slow = try await integration(api, user, key: FakeProviders.openAISlowKey)
            let prompt = String(repeating: "How much is this prompt? ", count: 60)
            let body = Data(
                #"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"\#(prompt)"}]}"#.utf8)
            let estimate = Int64((body.count + 3) / 4)

            // The provider breaks off after its first chunk.
            var request = HTTPClientRequest(url: caller.base + "/gateway/\(breaking)/v1/chat/completions")
            request.method = .POST
            request.headers.add(name: "authorization", value: "Bearer \(token)")
            request.body = .bytes(ByteBuffer(bytes: body))
            let broken = try await caller.client.execute(request, timeout: .seconds(10))
            #expect(broken.status == .ok)
            do {
                for try await _ in broken.body {}
            } catch {}
            let cut = try #require(try await events(api, integration: breaking, count: 1).first)
            // gpt-4o input at 2.5 dollars per million tokens.
            let price = (estimate * 5 + 1) / 2
            #expect(cut == Recorded(model: "gpt-4o", input: estimate, output: 0, cost: price, estimated: true))

            // The caller reads the first chunk and goes away while the provider is still answering.
            let first = Mutex(false)
            var slowRequest = HTTPClientRequest(url: caller.base + "/gateway/\(slow)/v1/chat/completions")
            slowRequest.method = .POST
            slowRequest.headers.add(name: "authorization", value: "Bearer \(token)")
            slowRequest.body = .bytes(ByteBuffer(bytes: body))
            let reader = Task { [slowRequest] in
                let response = try await caller.client.execute(slowRequest, timeout: .seconds(30))
                var chunks = response.body.makeAsyncIterator()
                _ = try await chunks.next()
                first.withLock { $0 = true }
                while try await chunks.next() != nil {}
            }
            for _ in 0..<500 where !first.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
            #expect(first.withLock { $0 })
            reader.cancel()
            _ = await reader.result
            let left = try #require(try await events(api, integration: slow, count: 1).first)
            #expect(left.estimated && left.input == estimate && left.output == 0 && left.cost == price, "\(left)")
            print("estimate for a \(body.count)-byte request: \(estimate) input tokens, \(price) micro-dollars")

            // The caller leaves before a unary answer has begun (the provider takes 2 s).
            let unary = Data(#"{"model":"gpt-4o","messages":[{"role":"user","content":"\#(prompt)"}]}"#.utf8)
            var early = HTTPClientRequest(url: caller.base + "/gateway/\(slow)/v1/chat/completions")
            early.method = .POST
            early.headers.add(name: "authorization", value: "Bearer \(token)")
            early.body = .bytes(ByteBuffer(bytes: unary))
            let leaving = Task { [early] in _ = try await caller.client.execute(early, timeout: .seconds(30)) }
            for _ in 0..<500 where fakes.modelCalls.count < 3 { try await Task.sleep(for: .milliseconds(10)) }
            leaving.cancel()
            _ = await leaving.result
            let unanswered = try await events(api, integration: slow, count: 2)[1]
            let unaryEstimate = Int64((unary.count + 3) / 4)
            // Whether the server still relays the answer into the closed connection (then the provider's usage is
            // read, flagged as an estimate when the relay broke off on the way) or drops it unstarted (then the
            // estimate is charged), the request is never charged nothing.
            let estimatedUnary = Recorded(
                model: "gpt-4o", input: unaryEstimate, output: 0, cost: (unaryEstimate * 5 + 1) / 2, estimated: true)
            var brokenOff = Self.chat
            brokenOff.estimated = true
            #expect([Self.chat, brokenOff, estimatedUnary].contains(unanswered), "\(unanswered)")
            #expect(fakes.unexpected == [])
        }
    }

    @Test(
        """
        under a budget or token limit, endpoints the gateway cannot \
        meter answer 403 endpoint_not_metered until the owner allows them
        """, arguments: GatewayFront.allCases)
    func unmeteredEndpoints(front: GatewayFront) async throws {
        try await withMeteredGateway(front: front) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, key: FakeProviders.openAIKey)
            let anthropic = try await integration(api, user, type: "anthropic", key: FakeProviders.anthropicKey)
            let bearer = [("authorization", "Bearer \(token)")]
            let anthropicHeaders = [("x-api-key", token), ("anthropic-version", "2023-06-01")]
            let requests: [(String, [(String, String)], [String: Any])] = [
                (
                    "/gateway/\(openai)/v1/batches", bearer,
                    ["input_file_id": "file-fake", "endpoint": "/v1/chat/completions"]
                ),
                ("/gateway/\(openai)/v1/responses", bearer, ["model": "gpt-4o", "input": "Hi", "background": true]),
                ("/gateway/\(openai)/v1/images/generations", bearer, ["model": "dall-e-3", "prompt": "a vault"]),
                ("/gateway/\(anthropic)/v1/messages/batches", anthropicHeaders, ["requests": []]),
            ]
            func statuses() async throws -> [Int] {
                var result: [Int] = []
                for (path, headers, json) in requests {
                    let answer = try await caller.send(path, headers: headers, json: json)
                    if answer.status == 403 { #expect(answer.body.contains("\"endpoint_not_metered\"")) }
                    result.append(answer.status)
                }
                return result
            }
            // Without limits everything is forwarded.
            #expect(try await statuses() == [200, 200, 200, 200])
            #expect(fakes.modelCalls.count == 4)

            // A workspace budget covers both integrations.
            let set = try await api.request(.put, "/api/limits", auth: user.session, json: ["monthly_budget_usd": 50])
            #expect(set.status == .ok && set.json["allow_unmetered_endpoints"] as? Bool == false)
            #expect(try await statuses() == [403, 403, 403, 403])
            #expect(fakes.modelCalls.count == 4)
            // Metered endpoints still go through; a response that is not in the background is metered.
            let chat = try await caller.send(
                "/gateway/\(openai)/v1/chat/completions", headers: bearer, json: ["model": "gpt-4o", "messages": []])
            #expect(chat.status == 200)
            let response = try await caller.send(
                "/gateway/\(openai)/v1/responses", headers: bearer, json: ["model": "gpt-4o", "input": "Hi"])
            #expect(response.status == 200)

            // An integration's permission does not lift its workspace's budget.
            let own = try await api.request(
                .put, "/api/integrations/\(openai)/limits", auth: user.session,
                json: ["monthly_budget_usd": 10, "allow_unmetered_endpoints": true])
            #expect(own.status == .ok && own.json["allow_unmetered_endpoints"] as? Bool == true, "\(own.text)")
            #expect(try await statuses() == [403, 403, 403, 403])

            // The workspace's owner allows them: forwarded, with the integration's own permission.
            let allowed = try await api.request(
                .put, "/api/limits", auth: user.session,
                json: ["monthly_budget_usd": 50, "allow_unmetered_endpoints": true])
            #expect(allowed.status == .ok && allowed.json["allow_unmetered_endpoints"] as? Bool == true)
            #expect(try await statuses() == [200, 200, 200, 200])
            #expect(fakes.modelCalls.count == 4 + 2 + 4)

            let invalid = try await api.request(
                .put, "/api/limits", auth: user.session, json: ["allow_unmetered_endpoints": "yes"])
            #expect(
                invalid.status == .unprocessableContent && invalid.fields.keys.sorted() == ["allow_unmetered_endpoints"]
            )
            let audit = try await api.request(.get, "/api/audit?limit=200", auth: user.session)
            let updates = (audit.json["events"] as? [[String: Any]] ?? []).filter {
                $0["action"] as? String == "usage.limits.update"
            }
            #expect(updates.count == 3)
            #expect(fakes.unexpected == [])
        }
    }

    @Test(
        "usage reports need usage:report, are rate-limited per token and audited; a model name with a NUL is refused",
        arguments: TestDatabase.all)
    func reports(kind: TestDatabase) async throws {
        try await APIHarness.with(
            kind, configure: { $0.usageReportRateLimit = .init(perUser: 3, window: .seconds(600)) }
        ) {
            api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            let (_, gateway) = try await api.serviceToken(scopes: [.gatewayUse, .credentialsRead])
            let (reporterID, reporter) = try await api.serviceToken(scopes: [.usageReport])
            let (_, other) = try await api.serviceToken(scopes: [.usageReport])
            func report(_ token: String, key: String, model: String = "gpt-4o") async throws -> APIResponse {
                try await api.request(
                    .post, "/api/integrations/\(id)/usage", auth: .bearer(token),
                    json: ["model": model, "input_tokens": 1_000, "output_tokens": 500, "idempotency_key": key])
            }
            let refused = try await report(gateway, key: "r-0")
            #expect(refused.status == .forbidden && refused.text.contains("usage:report"))

            let first = try await report(reporter, key: "r-1")
            #expect(first.status == .created && first.json["estimated"] as? Bool == false, "\(first.text)")
            let nul = try await report(reporter, key: "r-2", model: "gpt\u{0}4o")
            #expect(nul.status == .unprocessableContent && nul.fields.keys.sorted() == ["model"])
            #expect(try await report(reporter, key: "r-1").status == .ok)
            let limited = try await report(reporter, key: "r-3")
            #expect(limited.status == .tooManyRequests && limited.text.contains("\"rate_limited\""))
            #expect(Int(limited.headers[.retryAfter] ?? "") ?? 0 >= 1)
            // The limit is the token's: another reporter goes on.
            #expect(try await report(other, key: "r-4").status == .created)

            // Each recorded report is audited once, by its token, never the repeat or the refusals.
            let audited = try await api.handle.database.withConnection { sql in
                try await sql.raw(
                    "SELECT actor_id, integration_id FROM audit_events WHERE action = 'usage.report' ORDER BY seq"
                ).all().map { try $0.decode(column: "actor_id", as: String.self) }
            }
            #expect(audited.count == 2 && audited.first == reporterID.lowercasedText)
            let summary = try await api.request(.get, "/api/usage?group_by=model", auth: user.session)
            #expect((summary.json["total"] as? [String: Any])?["requests"] as? Int == 2)
        }
    }

    @Test(
        """
        an event the database refuses is set aside and the others are written; \
        a bad model name is not stored; a full queue drops without waiting
        """,
        arguments: TestDatabase.all)
    func recorderNeverBlocks(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let registry = PrometheusCollectorRegistry()
            let recorder = UsageRecorder(
                store: api.runtime.usage, logger: api.logs.logger(), capacity: 4, interval: .seconds(60),
                registry: registry)
            let (tenantA, tenantB) = (UUID(), UUID())
            func event(_ owner: UUID, model: String?, id: UUID = UUID()) -> UsageEvent {
                UsageEvent(
                    id: id, ownerID: owner, integrationID: owner, type: .openai, model: model, source: .gateway,
                    status: 200, tokens: TokenUsage(inputTokens: 1_000, outputTokens: 500), costMicros: 7_000,
                    tokenID: nil)
            }
            // Tenant A's model name holds a NUL (PostgreSQL refuses it in text), then tenant B's usage follows.
            #expect(recorder.record(event(tenantA, model: "gpt\u{0}4o")))
            #expect(recorder.record(event(tenantB, model: "gpt-4o")))
            #expect(await recorder.flush())
            // The same event twice (its id is taken): the database refuses it alone, the others are written.
            let written = UUID()
            #expect(recorder.record(event(tenantA, model: "gpt-4o", id: written)))
            #expect(await recorder.flush())
            #expect(recorder.record(event(tenantB, model: "gpt-4o")))
            #expect(recorder.record(event(tenantA, model: "gpt-4o", id: written)))
            #expect(recorder.record(event(tenantB, model: "gpt-4o")))
            #expect(recorder.record(event(tenantA, model: String(repeating: "m", count: 201))))
            // Full: the fifth event is dropped at once, and counted.
            #expect(!recorder.record(event(tenantB, model: "gpt-4o")))
            #expect(await recorder.flush())
            #expect(recorder.queued == 0)

            let rows = try await api.handle.database.withConnection { sql in
                try await sql.raw("SELECT owner_id, model FROM usage_events").all().map {
                    (try $0.decode(column: "owner_id", as: UUID.self), try $0.decode(column: "model", as: String?.self))
                }
            }
            #expect(rows.filter { $0.0 == tenantB }.count == 3)
            #expect(rows.filter { $0.0 == tenantA }.count == 3)
            #expect(rows.filter { $0.0 == tenantA && $0.1 == nil }.count == 2)
            let metrics = registry.emitToString()
            #expect(metrics.contains("keyhaven_usage_events_set_aside_total 1"), "\(metrics)")
            #expect(metrics.contains("keyhaven_usage_events_dropped_total 1"))
            #expect(api.logs.all.contains { $0.contains("set aside") && $0.contains(written.lowercasedText) })
            #expect(!api.logs.all.contains { $0.contains("gpt\u{0}4o") })
        }
    }
}
