import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// One request a model endpoint of the fakes received: what the gateway sent on.
public struct FakeModelCall: Sendable {
    public var method: String
    public var path: String
    public var query: String?
    /// Header names lowercased.
    public var headers: [String: String]
    public var bodyBytes: Int
}

extension FakeProviders {
    /// The model requests received so far.
    public var modelCalls: [FakeModelCall] { state.modelCalls.withLock { $0 } }

    /// Makes streams stop after their first event until ``releaseStreams()`` (or 10 s).
    public func holdStreams() { state.holdStreams.withLock { $0 = true } }

    /// Lets held streams finish.
    public func releaseStreams() { state.holdStreams.withLock { $0 = false } }

    /// How many slow streams (``openAISlowKey``) lost their reader before their end: the gateway let go of the
    /// provider's connection instead of reading the rest.
    public var abandonedStreams: Int { state.abandonedStreams.withLock { $0 } }

    /// The size of the OpenAI fake's download, `GET /v1/files/large/content`: 256 MiB, several times what the
    /// kernel's socket buffers on the way may hold (the receiving one grows up to 32 MiB on loopback here).
    public static let largeAnswerBytes = 256 << 20

    /// How much of that download the fake has written so far: with a reader that does not read, what backpressure
    /// lets through.
    public var largeAnswerSent: Int { state.largeAnswerSent.withLock { $0 } }

    /// A key the OpenAI fake answers every model request with 429, and one it answers with 503.
    public static let openAIThrottledKey = "sk-fake-throttled-openai-000000"
    public static let openAIFailingKey = "sk-fake-failing-openai-0000000"
    /// A key whose streams break off after their first event.
    public static let openAIBreakingKey = "sk-fake-breaking-openai-000000"
    /// A key whose streams send ``slowChunks`` chunks 20 ms apart before their usage (a caller that goes away meanwhile
    /// never sees the usage), and whose unary answers come 2 s late.
    public static let openAISlowKey = "sk-fake-slow-openai-00000000000"
    /// How many chunks a slow stream sends before its usage.
    public static let slowChunks = 250

    /// The usage every fake answer reports, and its exact price in micro-dollars (hand-computed in the tests).
    public enum ModelUsage {
        /// gpt-4o-2024-08-06: 1000 input (400 cached), 500 output.
        public static let openAIChat = (input: 1_000, cached: 400, output: 500)
        /// text-embedding-3-small: 125 input.
        public static let openAIEmbedding = 125
        /// claude-sonnet-4-5-20250929: 100 fresh input, 2000 cache reads, 1000 cache writes, 300 output.
        public static let anthropic = (input: 100, cacheRead: 2_000, cacheWrite: 1_000, output: 300)
        /// gemini-2.5-flash: 10000 prompt (4000 cached), 1000 candidates, 500 thoughts.
        public static let gemini = (prompt: 10_000, cached: 4_000, candidates: 1_000, thoughts: 500)
    }

    static func addModelRoutes(_ router: Router<BasicRequestContext>, state: FakeState) {
        let fail = state.fail
        /// Records the call and refuses what the gateway must never send: another provider's key header, the
        /// caller's cookies or network, Keyhaven's own headers.
        @Sendable func received(_ request: Request, bodyBytes: Int, allowed keyHeader: String) -> String? {
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName] = field.value }
            state.modelCalls.withLock {
                $0.append(
                    FakeModelCall(
                        method: request.method.rawValue, path: request.uri.path, query: request.uri.query,
                        headers: headers, bodyBytes: bodyBytes))
            }
            let keyHeaders = ["authorization", "x-api-key", "x-goog-api-key"].filter { $0 != keyHeader }
            for name in keyHeaders + ["cookie", "x-forwarded-for", "connection", "accept-encoding", "x-csrf-token"]
            where headers[name] != nil {
                return "\(request.uri.path): header \(name) was forwarded"
            }
            if headers.keys.contains(where: { $0.hasPrefix("keyhaven-") }) {
                return "\(request.uri.path): a keyhaven- header"
            }
            if request.uri.queryParameters["key"] != nil { return "\(request.uri.path): a key in the query" }
            return nil
        }
        @Sendable func body(_ request: Request) async throws -> (Data, [String: Any]) {
            let buffer = try await request.body.collect(upTo: 16 << 20)
            let data = Data(buffer.readableBytesView)
            return (data, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:])
        }
        @Sendable func waitForRelease() async {
            for _ in 0..<1_000 where state.holdStreams.withLock({ $0 }) {
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        @Sendable func events(_ first: [String], then rest: [String]) -> Response {
            Response(
                status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                body: ResponseBody { writer in
                    for event in first { try await writer.write(ByteBuffer(string: event)) }
                    await waitForRelease()
                    for event in rest { try await writer.write(ByteBuffer(string: event)) }
                    try await writer.finish(nil)
                })
        }
        @Sendable func sse(_ object: [String: Any], event: String? = nil) -> String {
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            return (event.map { "event: \($0)\n" } ?? "") + "data: " + String(decoding: data, as: UTF8.self) + "\n\n"
        }

        // OpenAI: chat completions (unary and streamed), embeddings, and an upload that counts what it receives.
        router.post("/openai/v1/chat/completions") { request, _ -> Response in
            let (data, object) = try await body(request)
            if let problem = received(request, bodyBytes: data.count, allowed: "authorization") { return fail(problem) }
            switch request.headers[.authorization] {
            case "Bearer \(openAISlowKey)" where object["stream"] as? Bool == true:
                let includeUsage = (object["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true
                return Response(
                    status: .ok, headers: [.contentType: "text/event-stream"],
                    body: ResponseBody { writer in
                        for _ in 0..<slowChunks {
                            do {
                                try await writer.write(
                                    ByteBuffer(string: "data: {\"choices\":[{\"delta\":{\"content\":\"..\"}}]}\n\n"))
                            } catch {
                                state.abandonedStreams.withLock { $0 += 1 }
                                throw error
                            }
                            try await Task.sleep(for: .milliseconds(20))
                        }
                        if includeUsage {
                            try await writer.write(
                                ByteBuffer(
                                    string:
                                        "data: "
                                        + "{\"choices\":[],\"usage\":{\"prompt_tokens\":"
                                        + "1000,\"completion_tokens\":500}}\n\n"
                                ))
                        }
                        try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                        try await writer.finish(nil)
                    })
            case "Bearer \(openAIKey)", "Bearer \(openAISlowKey)": break
            case "Bearer \(openAIThrottledKey)":
                return json(.tooManyRequests, ["error": ["message": "Rate limit reached.", "type": "requests"]])
            case "Bearer \(openAIFailingKey)":
                return json(.serviceUnavailable, ["error": ["message": "The engine is currently overloaded."]])
            case "Bearer \(openAIBreakingKey)":
                return Response(
                    status: .ok, headers: [.contentType: "text/event-stream"],
                    body: ResponseBody { writer in
                        try await writer.write(
                            ByteBuffer(string: "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"))
                        throw CancellationError()
                    })
            default:
                return json(
                    .unauthorized, ["error": ["message": "Incorrect API key provided.", "code": "invalid_api_key"]])
            }
            let usage = ModelUsage.openAIChat
            let usageObject: [String: Any] = [
                "prompt_tokens": usage.input, "completion_tokens": usage.output,
                "total_tokens": usage.input + usage.output, "prompt_tokens_details": ["cached_tokens": usage.cached],
            ]
            let model = "gpt-4o-2024-08-06"
            if request.headers[.authorization] == "Bearer \(openAISlowKey)", object["stream"] as? Bool != true {
                // A slow unary answer: its head comes 2 s later.
                try await Task.sleep(for: .seconds(2))
            }
            guard object["stream"] as? Bool == true else {
                return json(
                    .ok,
                    [
                        "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
                        "choices": [
                            [
                                "index": 0, "message": ["role": "assistant", "content": "Hello"],
                                "finish_reason": "stop",
                            ]
                        ],
                        "usage": usageObject,
                    ])
            }
            let includeUsage = (object["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true
            func chunk(_ text: String) -> String {
                var fields: [String: Any] = [
                    "id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                    "choices": [["index": 0, "delta": ["content": text]]],
                ]
                if includeUsage { fields["usage"] = NSNull() }
                return sse(fields)
            }
            var rest = [chunk("lo")]
            if includeUsage {
                rest.append(
                    sse([
                        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model, "choices": [],
                        "usage": usageObject,
                    ]))
            }
            rest.append("data: [DONE]\n\n")
            return events([chunk("Hel")], then: rest)
        }
        router.post("/openai/v1/embeddings") { request, _ -> Response in
            let (data, _) = try await body(request)
            if let problem = received(request, bodyBytes: data.count, allowed: "authorization") { return fail(problem) }
            guard request.headers[.authorization] == "Bearer \(openAIKey)" else {
                return json(.unauthorized, ["error": ["message": "Incorrect API key provided."]])
            }
            let tokens = ModelUsage.openAIEmbedding
            return json(
                .ok,
                [
                    "object": "list", "model": "text-embedding-3-small",
                    "data": [["object": "embedding", "index": 0, "embedding": [0.1, 0.2]]],
                    "usage": ["prompt_tokens": tokens, "total_tokens": tokens],
                ])
        }
        // Endpoints that bill without reporting usage in their answer: a batch, a background response, an image.
        router.post("/openai/v1/batches") { request, _ -> Response in
            let (data, _) = try await body(request)
            if let problem = received(request, bodyBytes: data.count, allowed: "authorization") { return fail(problem) }
            guard request.headers[.authorization] == "Bearer \(openAIKey)" else {
                return fail("batches: authorization")
            }
            return json(
                .ok,
                [
                    "id": "batch_fake", "object": "batch", "endpoint": "/v1/chat/completions", "status": "validating",
                    "input_file_id": "file-fake", "completion_window": "24h",
                ])
        }
        router.post("/openai/v1/responses") { request, _ -> Response in
            let (data, object) = try await body(request)
            if let problem = received(request, bodyBytes: data.count, allowed: "authorization") { return fail(problem) }
            guard request.headers[.authorization] == "Bearer \(openAIKey)" else {
                return fail("responses: authorization")
            }
            let usage = ModelUsage.openAIChat
            guard object["background"] as? Bool != true else {
                return json(
                    .ok, ["id": "resp_fake", "object": "response", "status": "queued", "model": "gpt-4o-2024-08-06"])
            }
            return json(
                .ok,
                [
                    "id": "resp_fake", "object": "response", "status": "completed", "model": "gpt-4o-2024-08-06",
                    "output": [],
                    "usage": [
                        "input_tokens": usage.input, "input_tokens_details": ["cached_tokens": usage.cached],
                        "output_tokens": usage.output, "total_tokens": usage.input + usage.output,
                    ],
                ])
        }
        router.post("/openai/v1/images/generations") { request, _ -> Response in
            let (data, _) = try await body(request)
            if let problem = received(request, bodyBytes: data.count, allowed: "authorization") { return fail(problem) }
            guard request.headers[.authorization] == "Bearer \(openAIKey)" else { return fail("images: authorization") }
            return json(.ok, ["created": 1_700_000_000, "data": [["url": "https://images.example.test/fake.png"]]])
        }
        router.get("/openai/v1/files/large/content") { request, _ -> Response in
            // A download of ``largeAnswerBytes``, written as fast as the reader takes it; what was written is counted.
            if let problem = received(request, bodyBytes: 0, allowed: "authorization") { return fail(problem) }
            guard request.headers[.authorization] == "Bearer \(openAIKey)" else {
                return fail("download: authorization")
            }
            let piece = ByteBuffer(repeating: UInt8(ascii: "k"), count: 64 << 10)
            return Response(
                status: .ok, headers: [.contentType: "application/octet-stream"],
                body: ResponseBody(contentLength: largeAnswerBytes) { writer in
                    for _ in 0..<(largeAnswerBytes / piece.readableBytes) {
                        try await writer.write(piece)
                        state.largeAnswerSent.withLock { $0 += piece.readableBytes }
                    }
                    try await writer.finish(nil)
                })
        }
        router.post("/openai/v1/uploads/late") { request, _ -> Response in
            // Reads nothing for 2 s, then counts the body as it streams in.
            try await Task.sleep(for: .seconds(2))
            var count = 0
            for try await chunk in request.body { count += chunk.readableBytes }
            if let problem = received(request, bodyBytes: count, allowed: "authorization") { return fail(problem) }
            return json(.ok, ["bytes": count])
        }
        router.post("/openai/v1/uploads/echo") { request, _ -> Response in
            // Counts and hashes the body as it streams in, never holding it whole.
            var hash = SHA256()
            var count = 0
            for try await chunk in request.body {
                count += chunk.readableBytes
                hash.update(data: Data(chunk.readableBytesView))
            }
            if let problem = received(request, bodyBytes: count, allowed: "authorization") { return fail(problem) }
            guard request.headers[.authorization] == "Bearer \(openAIKey)" else { return fail("upload: authorization") }
            let digest = hash.finalize().map { String(format: "%02x", $0) }.joined()
            return json(.ok, ["bytes": count, "sha256": digest])
        }

        // Anthropic: messages, unary and streamed.
        router.post("/anthropic/v1/messages") { request, _ -> Response in
            let (data, object) = try await body(request)
            if let problem = received(request, bodyBytes: data.count, allowed: "x-api-key") { return fail(problem) }
            guard request.headers[HTTPField.Name("anthropic-version")!] == "2023-06-01" else {
                return fail("anthropic: version")
            }
            guard request.headers[HTTPField.Name("x-api-key")!] == anthropicKey else {
                return json(
                    .unauthorized,
                    ["type": "error", "error": ["type": "authentication_error", "message": "invalid x-api-key"]])
            }
            let usage = ModelUsage.anthropic
            let model = "claude-sonnet-4-5-20250929"
            guard object["stream"] as? Bool == true else {
                return json(
                    .ok,
                    [
                        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                        "content": [["type": "text", "text": "Hello"]], "stop_reason": "end_turn",
                        "usage": [
                            "input_tokens": usage.input, "cache_read_input_tokens": usage.cacheRead,
                            "cache_creation_input_tokens": usage.cacheWrite, "output_tokens": usage.output,
                        ],
                    ])
            }
            let start = sse(
                [
                    "type": "message_start",
                    "message": [
                        "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
                        "usage": [
                            "input_tokens": usage.input, "cache_read_input_tokens": usage.cacheRead,
                            "cache_creation_input_tokens": usage.cacheWrite, "output_tokens": 1,
                        ],
                    ],
                ], event: "message_start")
            let delta = sse(
                ["type": "content_block_delta", "index": 0, "delta": ["type": "text_delta", "text": "Hello"]],
                event: "content_block_delta")
            let end = sse(
                [
                    "type": "message_delta", "delta": ["stop_reason": "end_turn"],
                    "usage": ["output_tokens": usage.output],
                ],
                event: "message_delta")
            return events([start], then: [delta, end, sse(["type": "message_stop"], event: "message_stop")])
        }

        // Anthropic: message batches, billed without usage in the answer.
        router.post("/anthropic/v1/messages/batches") { request, _ -> Response in
            let (data, _) = try await body(request)
            if let problem = received(request, bodyBytes: data.count, allowed: "x-api-key") { return fail(problem) }
            guard request.headers[HTTPField.Name("x-api-key")!] == anthropicKey else {
                return fail("anthropic batches: x-api-key")
            }
            return json(
                .ok,
                [
                    "id": "msgbatch_fake", "type": "message_batch", "processing_status": "in_progress",
                    "request_counts": ["processing": 1, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0],
                ])
        }

        // Gemini: generateContent and streamGenerateContent (?alt=sse).
        router.post("/gemini/v1beta/models/:call") { request, context -> Response in
            let (data, _) = try await body(request)
            if let problem = received(request, bodyBytes: data.count, allowed: "x-goog-api-key") {
                return fail(problem)
            }
            guard request.headers[HTTPField.Name("x-goog-api-key")!] == geminiKey else {
                return json(
                    .badRequest,
                    ["error": ["code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"]])
            }
            let call = context.parameters.get("call") ?? ""
            let usage = ModelUsage.gemini
            func answer(_ text: String, candidates: Int, thoughts: Int) -> [String: Any] {
                [
                    "candidates": [["content": ["parts": [["text": text]], "role": "model"], "index": 0]],
                    "usageMetadata": [
                        "promptTokenCount": usage.prompt, "cachedContentTokenCount": usage.cached,
                        "candidatesTokenCount": candidates, "thoughtsTokenCount": thoughts,
                        "totalTokenCount": usage.prompt + candidates + thoughts,
                    ],
                    "modelVersion": "gemini-2.5-flash",
                ]
            }
            switch call {
            case "gemini-2.5-flash:generateContent":
                return json(.ok, answer("Hello", candidates: usage.candidates, thoughts: usage.thoughts))
            case "gemini-2.5-flash:streamGenerateContent" where request.uri.queryParameters["alt"] == "sse":
                return events(
                    [sse(answer("Hel", candidates: 1, thoughts: usage.thoughts))],
                    then: [sse(answer("lo", candidates: usage.candidates, thoughts: usage.thoughts))])
            default:
                return fail("gemini: \(call)")
            }
        }
    }
}
