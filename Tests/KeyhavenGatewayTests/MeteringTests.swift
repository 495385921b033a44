import Foundation
import KeyhavenCore
import NIOHTTP1
import Testing

@testable import KeyhavenGateway

@Suite("Metered endpoints")
struct MeteredEndpointTests {
    @Test("each provider's metered, free and unmetered endpoints, by method and path")
    func kinds() {
        let metered = MeteredEndpoints.Kind.metered(streamUsageOption: false)
        let cases: [(IntegrationType, HTTPMethod, String, MeteredEndpoints.Kind)] = [
            (.openai, .POST, "/v1/chat/completions", .metered(streamUsageOption: true)),
            (.openai, .POST, "/v1/completions", .metered(streamUsageOption: true)),
            (.openai, .POST, "/v1/embeddings", metered),
            (.openai, .POST, "/v1/responses", metered),
            (.openai, .POST, "/v1/moderations", .free),
            (.openai, .GET, "/v1/models", .free),
            (.openai, .DELETE, "/v1/files/file-1", .free),
            (.openai, .POST, "/v1/batches", .unmetered),
            (.openai, .POST, "/v1/images/generations", .unmetered),
            (.openai, .POST, "/v1/audio/speech", .unmetered),
            (.openai, .POST, "/v1/chat/completions/extra", .unmetered),
            (.openai, .PUT, "/v1/chat/completions", .unmetered),
            (.anthropic, .POST, "/v1/messages", metered),
            (.anthropic, .POST, "/v1/messages/count_tokens", .free),
            (.anthropic, .POST, "/v1/messages/batches", .unmetered),
            (.gemini, .POST, "/v1beta/models/gemini-2.5-flash:generateContent", metered),
            (.gemini, .POST, "/v1/models/gemini-2.5-flash:streamGenerateContent", metered),
            (.gemini, .POST, "/v1beta/models/gemini-2.5-flash:countTokens", .free),
            (.gemini, .POST, "/v1beta/models/gemini-2.5-flash:batchGenerateContent", .unmetered),
            (.gemini, .POST, "/v1beta/cachedContents", .unmetered),
            (.gemini, .POST, "/v2/models/gemini-2.5-flash:generateContent", .unmetered),
        ]
        for (provider, method, path, kind) in cases {
            #expect(MeteredEndpoints.kind(provider, method: method, path: path) == kind, "\(provider) \(path)")
        }
    }

    @Test("a body is read as JSON: escapes count, usage is asked for once, a background response is deferred")
    func inspection() {
        func inspect(_ text: String, option: Bool = true) -> InspectedBody {
            InspectedBody(body: Array(text.utf8), streamUsageOption: option)
        }
        let escaped = inspect(#"{"model":"gpt-4o","str\u0065am":true}"#)
        #expect(escaped.addsUsage && escaped.model == "gpt-4o")
        let sent = (try? JSONSerialization.jsonObject(with: Data(escaped.body))) as? [String: Any]
        #expect((sent?["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)
        let merged = inspect(#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#)
        let options = ((try? JSONSerialization.jsonObject(with: Data(merged.body))) as? [String: Any])?[
            "stream_options"]
        #expect((options as? [String: Any])?["include_usage"] as? Bool == true && merged.addsUsage)
        #expect(!inspect(#"{"stream":true,"stream_options":{"include_usage":true}}"#).addsUsage)
        #expect(!inspect(#"{"stream":true}"#, option: false).addsUsage)
        #expect(!inspect(#"{"stream":"true"}"#).addsUsage)
        #expect(inspect(#"{"model":"gpt-4o","background":true}"#).deferred)
        #expect(inspect(#"{"model":"gpt\u00004o"}"#).model == nil)
        #expect(inspect("not json").model == nil)
    }

    @Test("the estimate is a token per 4 bytes of the body, rounded up, at least 1")
    func estimate() {
        #expect(MeteredEndpoints.estimate(bodyBytes: 0) == 1)
        #expect(MeteredEndpoints.estimate(bodyBytes: 4) == 1)
        #expect(MeteredEndpoints.estimate(bodyBytes: 5) == 2)
        #expect(MeteredEndpoints.estimate(bodyBytes: 8 << 20) == 2 << 20)
        let metered = Gateway.Metered(model: "gpt-4o", usage: nil, complete: false, inputEstimate: 40)
        #expect(metered.charge(status: 200) == (TokenUsage(inputTokens: 40), true))
        #expect(metered.charge(status: 500) == (TokenUsage(), false))
        let unmetered = Gateway.Metered(model: nil, usage: nil, complete: true, inputEstimate: nil)
        #expect(unmetered.charge(status: 200) == (TokenUsage(), false))
        let cut = Gateway.Metered(
            model: "claude", usage: TokenUsage(inputTokens: 7, outputTokens: 1), complete: false, inputEstimate: 3)
        #expect(cut.charge(status: 200) == (TokenUsage(inputTokens: 7, outputTokens: 1), true))
    }

    @Test("a model name is kept only if it is at most 200 bytes without control characters")
    func modelNames() {
        #expect(ModelName.isValid("gpt-4o-2024-08-06"))
        #expect(ModelName.isValid(String(repeating: "m", count: 200)))
        #expect(!ModelName.isValid(String(repeating: "m", count: 201)))
        #expect(!ModelName.isValid(String(repeating: "é", count: 101)))
        #expect(!ModelName.isValid("gpt\u{0}4o") && !ModelName.isValid("gpt\n4o") && !ModelName.isValid("gpt\u{85}"))
        #expect(!ModelName.isValid(""))
        #expect(ModelName.validated("gpt\u{7F}") == nil && ModelName.validated("gpt-4o") == "gpt-4o")
    }
}
