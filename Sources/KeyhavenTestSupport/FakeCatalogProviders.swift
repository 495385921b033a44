import Foundation
import HTTPTypes
import Hummingbird
import KeyhavenCore
import NIOCore

/// One OpenAI-compatible provider of the catalog, as its fake plays it: a row of what the real service does. The
/// fake checks each request against the row, not against the catalog, so a catalog entry that sends the key the
/// wrong way, or checks the wrong path, fails against it.
public struct FakeCatalogProvider: Sendable {
    /// The catalog id; the fake lives under `/<id>` of the fakes' base URL.
    public let id: String
    /// The key the fake accepts.
    public let key: String
    /// The header the real service reads the key from, lowercased, and the value's prefix before the key.
    let header: String
    let scheme: String
    /// The check request's path, and what a good key gets: the JSON the check answers.
    let checkPath: String
    let listing: @Sendable () -> Any
    /// The chat path, and the model its answers name (one the price table has, when the provider is priced).
    public let chatPath: String
    public let model: String
    /// Whether the service takes `stream_options.include_usage` (and sends usage in a stream only when asked).
    let streamUsageOption: Bool
    /// Whether it answers in Cohere's shapes (v2 chat, `billed_units`, named stream events) instead of OpenAI's.
    public let cohere: Bool

    /// What a unary answer holds when its usage is there, and how a whole stream ends.
    public var usageMarker: String { cohere ? "\"billed_units\"" : "\"prompt_tokens\":1000" }
    public var streamEnd: String { cohere ? "event: message-end" : "data: [DONE]\n\n" }

    /// The usage every chat answer reports: 1000 input tokens, 500 output.
    public static let usage = (input: 1_000, output: 500)
}

extension FakeProviders {
    /// The rows, one per OpenAI-compatible catalog provider.
    public static let catalogProviders: [FakeCatalogProvider] = [
        row("mistral", key: String(repeating: "m", count: 32), check: "/v1/models", model: "mistral-small-latest"),
        row(
            "groq", key: "gsk_" + String(repeating: "g", count: 52), check: "/v1/models",
            model: "openai/gpt-oss-120b", streamUsageOption: true),
        row(
            "deepseek", key: "sk-" + String(repeating: "d", count: 32), check: "/models", chat: "/chat/completions",
            model: "deepseek-chat", streamUsageOption: true),
        row(
            "xai", key: "xai-" + String(repeating: "x", count: 80), check: "/v1/models", model: "grok-4.3",
            streamUsageOption: true),
        row(
            "openrouter", key: "sk-or-v1-" + String(repeating: "0", count: 64), check: "/v1/key",
            listing: { ["data": ["label": "sk-or-v1-000…000", "limit": NSNull(), "usage": 0]] },
            model: "openai/gpt-4o-mini"),
        row(
            "together", key: "tgp_v1_" + String(repeating: "t", count: 40), check: "/v1/models",
            listing: { [["id": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "object": "model"]] },
            model: "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        row(
            "fireworks", key: "fw_" + String(repeating: "f", count: 24), check: "/v1/models",
            model: "accounts/fireworks/models/llama-v3p1-8b-instruct"),
        row(
            "perplexity", key: "pplx-" + String(repeating: "p", count: 48), check: "/async/chat/completions",
            listing: { ["requests": [] as [Any]] }, chat: "/chat/completions", model: "sonar"),
        row(
            "cohere", key: String(repeating: "c", count: 40), check: "/v1/models",
            listing: { ["models": [["name": "command-a-03-2025"]]] }, chat: "/v2/chat", model: "command-a-03-2025",
            cohere: true),
    ]

    private static func row(
        _ id: String, key: String, check: String, listing: (@Sendable () -> Any)? = nil,
        chat: String = "/v1/chat/completions", model: String, streamUsageOption: Bool = false, cohere: Bool = false
    ) -> FakeCatalogProvider {
        FakeCatalogProvider(
            id: id, key: key, header: "authorization", scheme: "Bearer ", checkPath: check,
            listing: listing ?? { ["object": "list", "data": [["id": model, "object": "model"]]] }, chatPath: chat,
            model: model, streamUsageOption: streamUsageOption, cohere: cohere)
    }

    /// A provider no built-in catalog has, for the test that adds it with `KEYHAVEN_CATALOG_EXTRA`
    /// (``extraCatalogEntry``): OpenAI-compatible, priced as Mistral's models.
    public static let extraProvider = row(
        "acme_llm", key: "acme-" + String(repeating: "a", count: 30), check: "/v1/models", model: "mistral-small-latest"
    )

    /// A custom OpenAI-compatible endpoint (a self-hosted model server), at `/openai_compatible/v1` of the fakes.
    public static let customProvider = row(
        "openai_compatible", key: "local-" + String(repeating: "l", count: 20), check: "/v1/models",
        model: "llama-3.1-8b-instruct")

    /// The catalog file that adds ``extraProvider``: one entry, no code.
    public static let extraCatalogEntry = """
        {"version": 1, "providers": [{
          "id": "acme_llm", "names": {"en": "Acme LLM", "es": "Acme LLM"}, "group": "ai", "mark": "Ac",
          "credential": {"kind": "api_key", "prefix": "acme-", "min_length": 30, "example": "acme-…"},
          "base_url": "https://api.acme-llm.example", "allowed_hosts": ["api.acme-llm.example"],
          "auth": {"header": "Authorization", "scheme": "Bearer"},
          "verify": {"path": "/v1/models", "found_at": "/data"},
          "gateway": {"usage": "openai", "metered": [{"path": "/v1/chat/completions"}]},
          "prices": ["mistral"]
        }]}
        """

    /// The row of catalog provider `id`.
    public static func catalogProvider(_ id: String) -> FakeCatalogProvider? { catalogProviders.first { $0.id == id } }

    static func addCatalogRoutes(_ router: Router<BasicRequestContext>, state: FakeState) {
        for provider in catalogProviders + [extraProvider, customProvider] {
            addRoutes(router, for: provider, state: state)
        }
        addAzureOpenAIRoutes(router, state: state)
        addVertexRoutes(router, state: state)
    }

    // MARK: Vertex AI

    /// The project the Vertex fake serves (the fake service account's), and how many times a token was minted for it.
    public static let vertexProject = "fake-project"
    public var googleTokensIssued: Int {
        state.issuedTokens.withLock { $0.values.filter { $0.hasPrefix("google:") }.count }
    }

    /// Vertex AI under `/vertex/{region}`: only a bearer token the Google fake issued, for the project it knows;
    /// the project's endpoints listed; Gemini's generateContent, unary and as server-sent events.
    static func addVertexRoutes(_ router: Router<BasicRequestContext>, state: FakeState) {
        let fail = state.fail
        @Sendable func refusal(_ request: Request, _ context: BasicRequestContext) -> Response? {
            guard request.headers[HTTPField.Name("x-goog-api-key")!] == nil, request.uri.queryParameters["key"] == nil
            else { return fail("vertex: an API key") }
            let header = request.headers[.authorization] ?? ""
            guard header.hasPrefix("Bearer "),
                let issued = state.issuedTokens.withLock({ $0[String(header.dropFirst(7))] }),
                issued.hasPrefix("google:")
            else {
                return json(
                    .unauthorized,
                    [
                        "error": [
                            "code": 401, "message": "Request had invalid authentication credentials.",
                            "status": "UNAUTHENTICATED",
                        ]
                    ])
            }
            guard context.parameters.get("project") == vertexProject,
                context.parameters.get("location") == context.parameters.get("region")
            else {
                return json(
                    .forbidden,
                    [
                        "error": [
                            "code": 403, "message": "Permission denied on the project.", "status": "PERMISSION_DENIED",
                        ]
                    ])
            }
            return nil
        }
        router.get("/vertex/:region/v1/projects/:project/locations/:location/endpoints") {
            request, context -> Response in
            if let refused = refusal(request, context) { return refused }
            return json(.ok, [:])
        }
        router.post("/vertex/:region/:version/projects/:project/locations/:location/publishers/google/models/:call") {
            request, context -> Response in
            let buffer = try await request.body.collect(upTo: 16 << 20)
            if let refused = refusal(request, context) { return refused }
            _ = state.record(request, bodyBytes: buffer.readableBytes)
            let usage = ModelUsage.gemini
            func answer(_ text: String, candidates: Int) -> [String: Any] {
                [
                    "candidates": [["content": ["parts": [["text": text]], "role": "model"], "index": 0]],
                    "usageMetadata": [
                        "promptTokenCount": usage.prompt, "cachedContentTokenCount": usage.cached,
                        "candidatesTokenCount": candidates, "thoughtsTokenCount": usage.thoughts,
                        "totalTokenCount": usage.prompt + candidates + usage.thoughts,
                    ],
                    "modelVersion": "gemini-2.5-flash",
                ]
            }
            // Google ends its events with CRLF pairs.
            func event(_ value: [String: Any]) -> String { sse(value, end: "\r\n\r\n") }
            switch context.parameters.get("call") ?? "" {
            case "gemini-2.5-flash:generateContent":
                return json(.ok, answer("Hello", candidates: usage.candidates))
            case "gemini-2.5-flash:streamGenerateContent" where request.uri.queryParameters["alt"] == "sse":
                return streamed([
                    event(answer("Hel", candidates: 1)), event(answer("lo", candidates: usage.candidates)),
                ])
            case let call:
                return fail("vertex: \(call)")
            }
        }
    }

    // MARK: Azure OpenAI

    /// The Azure OpenAI resource the fake plays, the key it accepts, and its one deployment.
    public static let azureOpenAIResource = "fake-resource"
    public static let azureOpenAIKey = String(repeating: "a0", count: 16)
    public static let azureOpenAIDeployment = "gpt4o-prod"
    /// The model its answers name (as Azure does: the model behind the deployment).
    public static let azureOpenAIModel = "gpt-4o-2024-08-06"

    /// An Azure OpenAI resource under `/azure_openai/{resource}`: the key in `api-key` only, an `api-version` on
    /// every request, deployments listed, chat completions unary and streamed (usage when asked).
    static func addAzureOpenAIRoutes(_ router: Router<BasicRequestContext>, state: FakeState) {
        let fail = state.fail
        /// Nil when the request is what Azure takes; otherwise its answer.
        @Sendable func refusal(_ request: Request, _ context: BasicRequestContext, version: String?) -> Response? {
            for other in ["authorization", "x-api-key", "x-goog-api-key"]
            where request.headers[HTTPField.Name(other)!] != nil {
                return fail("azure_openai: a key in \(other)")
            }
            guard let sent = request.uri.queryParameters["api-version"].map(String.init),
                version.map({ sent == $0 }) ?? !sent.isEmpty
            else { return fail("azure_openai: api-version \(request.uri.query ?? "")") }
            guard context.parameters.get("resource") == azureOpenAIResource else {
                return json(.notFound, ["error": ["code": "404", "message": "Resource not found"]])
            }
            guard request.headers[HTTPField.Name("api-key")!] == azureOpenAIKey else {
                return json(
                    .unauthorized,
                    [
                        "error": [
                            "code": "401",
                            "message":
                                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
                                + "provide a valid key for an active subscription and use a correct regional API "
                                + "endpoint for your resource.",
                        ]
                    ])
            }
            return nil
        }
        router.get("/azure_openai/:resource/openai/deployments") { request, context -> Response in
            if let refused = refusal(request, context, version: "2022-12-01") { return refused }
            return json(
                .ok,
                [
                    "object": "list",
                    "data": [
                        ["id": azureOpenAIDeployment, "model": "gpt-4o", "object": "deployment", "status": "succeeded"]
                    ],
                ])
        }
        router.post("/azure_openai/:resource/openai/deployments/:deployment/chat/completions") {
            request, context -> Response in
            let buffer = try await request.body.collect(upTo: 16 << 20)
            if let refused = refusal(request, context, version: nil) { return refused }
            _ = state.record(request, bodyBytes: buffer.readableBytes)
            guard context.parameters.get("deployment") == azureOpenAIDeployment else {
                return json(
                    .notFound, ["error": ["code": "DeploymentNotFound", "message": "The deployment does not exist."]])
            }
            let object = (try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView))) as? [String: Any]
            let usage = openAIUsage
            guard object?["stream"] as? Bool == true else {
                return openAIChat(id: "chatcmpl-azure", model: azureOpenAIModel)
            }
            let asked = (object?["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true
            var events = [
                sse(["model": azureOpenAIModel, "choices": [["index": 0, "delta": ["content": "Hel"]]]]),
                sse([
                    "model": azureOpenAIModel,
                    "choices": [["index": 0, "delta": ["content": "lo"], "finish_reason": "stop"]],
                ]),
            ]
            if asked { events.append(sse(["model": azureOpenAIModel, "choices": [] as [Any], "usage": usage])) }
            events.append("data: [DONE]\n\n")
            return streamed(events)
        }
    }

    /// A provider's check and chat routes, under `/<id>`.
    static func addRoutes(_ router: Router<BasicRequestContext>, for provider: FakeCatalogProvider, state: FakeState) {
        let fail = state.fail
        /// The key sent the way the service reads it, and only that way; nil (after recording what was wrong) or the
        /// key.
        @Sendable func key(_ request: Request) -> (String?, Response?) {
            guard request.uri.queryParameters["key"] == nil, request.uri.queryParameters["api_key"] == nil else {
                return (nil, fail("\(provider.id): a key in the query"))
            }
            for other in ["authorization", "x-api-key", "x-goog-api-key", "api-key"] where other != provider.header {
                if request.headers[HTTPField.Name(other)!] != nil {
                    return (nil, fail("\(provider.id): a key in \(other)"))
                }
            }
            guard let value = request.headers[HTTPField.Name(provider.header)!], value.hasPrefix(provider.scheme)
            else { return (nil, fail("\(provider.id): no \(provider.header) \(provider.scheme)")) }
            return (String(value.dropFirst(provider.scheme.count)), nil)
        }
        @Sendable func refused(_ sent: String) -> Response {
            // Like the real services, the refusal echoes the key it was given.
            json(.unauthorized, ["error": ["message": "Invalid API key: \(sent)", "type": "invalid_request_error"]])
        }
        router.get("/\(provider.id)\(provider.checkPath)") { request, _ -> Response in
            let (sent, problem) = key(request)
            if let problem { return problem }
            guard sent == provider.key else { return refused(sent ?? "") }
            let data = (try? JSONSerialization.data(withJSONObject: provider.listing())) ?? Data()
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        router.post("/\(provider.id)\(provider.chatPath)") { request, _ -> Response in
            let buffer = try await request.body.collect(upTo: 16 << 20)
            let (sent, problem) = key(request)
            if let problem { return problem }
            let headers = state.record(request, bodyBytes: buffer.readableBytes)
            if headers.keys.contains(where: { $0.hasPrefix("keyhaven-") }) || headers["cookie"] != nil {
                return fail("\(provider.id): a keyhaven- header or a cookie was forwarded")
            }
            guard sent == provider.key else { return refused(sent ?? "") }
            let object = (try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView))) as? [String: Any]
            if provider.cohere { return cohereAnswer(object, model: provider.model) }
            let usage = openAIUsage
            guard object?["stream"] as? Bool == true else {
                return openAIChat(id: "chatcmpl-\(provider.id)", model: provider.model)
            }
            if !provider.streamUsageOption, object?["stream_options"] != nil {
                // The services without the option refuse fields they do not know.
                return json(
                    .unprocessableContent, ["error": ["message": "Extra inputs are not permitted: stream_options"]])
            }
            let asked = (object?["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true
            var events = [
                sse([
                    "id": "chatcmpl-\(provider.id)", "object": "chat.completion.chunk", "model": provider.model,
                    "choices": [["index": 0, "delta": ["content": "Hel"]]],
                ]),
                sse([
                    "id": "chatcmpl-\(provider.id)", "object": "chat.completion.chunk", "model": provider.model,
                    "choices": [["index": 0, "delta": ["content": "lo"], "finish_reason": "stop"]],
                ]),
            ]
            if provider.streamUsageOption {
                // Usage only when asked, in a chunk of its own, as OpenAI sends it.
                if asked {
                    events.append(
                        sse([
                            "id": "chatcmpl-\(provider.id)", "object": "chat.completion.chunk", "model": provider.model,
                            "choices": [] as [Any], "usage": usage,
                        ]))
                }
            } else {
                // Usage in the last chunk, always, as the services without the option send it.
                events.append(
                    sse([
                        "id": "chatcmpl-\(provider.id)", "object": "chat.completion.chunk", "model": provider.model,
                        "choices": [["index": 0, "delta": [:] as [String: Any]]], "usage": usage,
                    ]))
            }
            events.append("data: [DONE]\n\n")
            return streamed(events)
        }
    }

    /// Cohere's v2 chat: no model in the answer, usage as `billed_units` (and the tokens it saw, which are more), a
    /// stream of named events ending with `message-end`.
    static func cohereAnswer(_ request: [String: Any]?, model: String) -> Response {
        let usage: [String: Any] = [
            "billed_units": [
                "input_tokens": FakeCatalogProvider.usage.input, "output_tokens": FakeCatalogProvider.usage.output,
            ],
            "tokens": [
                "input_tokens": FakeCatalogProvider.usage.input + 71, "output_tokens": FakeCatalogProvider.usage.output,
            ],
        ]
        guard request?["model"] as? String == model, request?["messages"] is [Any] else {
            return json(.badRequest, ["message": "invalid request: model and messages are required"])
        }
        guard request?["stream"] as? Bool == true else {
            return json(
                .ok,
                [
                    "id": "cohere-1", "finish_reason": "COMPLETE",
                    "message": ["role": "assistant", "content": [["type": "text", "text": "Hello"]]], "usage": usage,
                ])
        }
        func event(_ name: String, _ value: [String: Any]) -> String { sse(value, event: name) }
        let events = [
            event("message-start", ["type": "message-start", "id": "cohere-1"]),
            event(
                "content-delta",
                ["type": "content-delta", "index": 0, "delta": ["message": ["content": ["text": "Hel"]]]]),
            event(
                "content-delta",
                ["type": "content-delta", "index": 0, "delta": ["message": ["content": ["text": "lo"]]]]),
            event("message-end", ["type": "message-end", "delta": ["finish_reason": "COMPLETE", "usage": usage]]),
        ]
        return streamed(events)
    }

    /// One server-sent event of `value` (named `event` when given), ended by `end`.
    static func sse(_ value: [String: Any], event: String? = nil, end: String = "\n\n") -> String {
        let data = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])) ?? Data()
        return (event.map { "event: \($0)\n" } ?? "") + "data: " + String(decoding: data, as: UTF8.self) + end
    }

    /// An answer of server-sent `events`.
    static func streamed(_ events: [String]) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/event-stream"],
            body: ResponseBody { writer in
                for text in events { try await writer.write(ByteBuffer(string: text)) }
                try await writer.finish(nil)
            })
    }

    /// OpenAI's usage numbers for ``FakeCatalogProvider/usage``.
    static var openAIUsage: [String: Any] {
        [
            "prompt_tokens": FakeCatalogProvider.usage.input, "completion_tokens": FakeCatalogProvider.usage.output,
            "total_tokens": FakeCatalogProvider.usage.input + FakeCatalogProvider.usage.output,
        ]
    }

    /// An OpenAI chat completion from `model`, with its usage.
    static func openAIChat(id: String, model: String) -> Response {
        json(
            .ok,
            [
                "id": id, "object": "chat.completion", "model": model,
                "choices": [
                    ["index": 0, "message": ["role": "assistant", "content": "Hello"], "finish_reason": "stop"]
                ],
                "usage": openAIUsage,
            ])
    }
}

extension FakeProviders.FakeState {
    /// Records a model call the gateway sent (as the model fakes do), and returns its headers, names lowercased.
    func record(_ request: Request, bodyBytes: Int) -> [String: String] {
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        modelCalls.withLock {
            $0.append(
                FakeModelCall(
                    method: request.method.rawValue, path: request.uri.path, query: request.uri.query, headers: headers,
                    bodyBytes: bodyBytes))
        }
        return headers
    }
}
