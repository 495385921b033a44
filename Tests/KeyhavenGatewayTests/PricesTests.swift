import Foundation
import KeyhavenCore
import NIOCore
import Testing

@testable import KeyhavenGateway

@Suite("Model prices")
struct PricesTests {
    let table: PriceTable

    init() throws {
        table = try PriceTable.bundled()
    }

    @Test("the bundled table prices the three gateway providers' models")
    func bundled() throws {
        #expect(table.count > 250)
        #expect(table.price(.openai, model: "gpt-4o") != nil)
        #expect(table.price(.anthropic, model: "claude-sonnet-4-5") != nil)
        #expect(table.price(.gemini, model: "gemini-2.5-flash") != nil)
        #expect(table.price(.gemini, model: "models/gemini-2.5-flash") != nil)
        #expect(table.price(.openai, model: "no-such-model") == nil)
        // A provider's model is not priced under another provider.
        #expect(table.price(.anthropic, model: "gpt-4o") == nil)
    }

    @Test("an OpenAI chat with cached input costs what the hand computation says")
    func openAICached() throws {
        // gpt-4o: input $2.50, cached input $1.25, output $10.00 per million tokens.
        let usage = TokenUsage(inputTokens: 1_000, cachedInputTokens: 400, outputTokens: 500)
        // 600 × 2.5 + 400 × 1.25 + 500 × 10 micro-dollars.
        #expect(try #require(table.price(.openai, model: "gpt-4o")).cost(of: usage) == 7_000)
        #expect(try #require(table.price(.openai, model: "gpt-4o-2024-08-06")).cost(of: usage) == 7_000)
        // A dated name the table does not list is priced as its undated model.
        #expect(try #require(table.price(.openai, model: "gpt-4o-2099-01-01")).cost(of: usage) == 7_000)
    }

    @Test("an Anthropic message prices cache reads and writes apart from input")
    func anthropicCache() throws {
        // claude-sonnet-4-5: input $3, cache write $3.75, cache read $0.30, output $15 per million tokens.
        let usage = TokenUsage(inputTokens: 3_100, cachedInputTokens: 2_000, cacheWriteTokens: 1_000, outputTokens: 300)
        // 100 × 3 + 2000 × 0.3 + 1000 × 3.75 + 300 × 15 micro-dollars.
        #expect(try #require(table.price(.anthropic, model: "claude-sonnet-4-5")).cost(of: usage) == 9_150)
        #expect(try #require(table.price(.anthropic, model: "claude-sonnet-4-5-20250929")).cost(of: usage) == 9_150)
    }

    @Test("a Gemini answer prices cached input and reasoning")
    func geminiReasoning() throws {
        // gemini-2.5-flash: input $0.30, cached $0.03, output and reasoning $2.50 per million tokens.
        let usage = TokenUsage(inputTokens: 10_000, cachedInputTokens: 4_000, outputTokens: 1_500, reasoningTokens: 500)
        // 6000 × 0.3 + 4000 × 0.03 + 1000 × 2.5 + 500 × 2.5 micro-dollars.
        #expect(try #require(table.price(.gemini, model: "gemini-2.5-flash")).cost(of: usage) == 5_670)
    }

    @Test("fractions of a micro-dollar round half up, exactly")
    func rounding() throws {
        // text-embedding-3-small: $0.02 per million tokens; 125 tokens cost 2.5 micro-dollars.
        let price = try #require(table.price(.openai, model: "text-embedding-3-small"))
        #expect(price.cost(of: TokenUsage(inputTokens: 125)) == 3)
        #expect(price.cost(of: TokenUsage(inputTokens: 124)) == 2)
        #expect(price.cost(of: TokenUsage(inputTokens: Int64.max)) > 0)
    }

    @Test("a workspace's negotiated price wins over the table; an unknown model has no cost")
    func overrides() {
        let prices = Prices(table)
        let usage = TokenUsage(inputTokens: 1_000_000, outputTokens: 1_000_000)
        #expect(prices.cost(.openai, model: "gpt-4o", usage: usage) == 12_500_000)
        let negotiated = ["gpt-4o": ModelPrice(input: 1_000_000, output: 2_000_000)]
        #expect(prices.cost(.openai, model: "gpt-4o", usage: usage, overrides: negotiated) == 3_000_000)
        #expect(prices.cost(.openai, model: "house-model-7", usage: usage) == nil)
        #expect(prices.cost(.openai, model: nil, usage: usage) == nil)
    }

    @Test("a file that is not a price table is refused whole")
    func invalidTables() {
        for text in [
            "[]", "{}", "not json", #"{"gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": "cheap"}}"#,
            #"{"gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": -1}}"#,
        ] {
            #expect(throws: PriceTable.Invalid.self) { try PriceTable(json: Data(text.utf8)) }
        }
        let small =
            #"{"my-model": {"litellm_provider": "openai", "#
            + #""input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}"#
        #expect((try? PriceTable(json: Data(small.utf8)))?.price(.openai, model: "my-model")?.output == 2_000_000)
    }
}

@Suite("Usage read from provider answers")
struct UsageMeterTests {
    func run(_ provider: IntegrationType, _ contentType: String, hides: Bool = false, chunks: [String]) -> (
        String, UsageMeter
    ) {
        var meter = UsageMeter(provider: provider, contentType: contentType, hidesUsageChunk: hides, fallbackModel: nil)
        var passed = ""
        for chunk in chunks { passed += String(buffer: meter.pass(ByteBuffer(string: chunk))) }
        if let rest = meter.finish() { passed += String(buffer: rest) }
        return (passed, meter)
    }

    @Test(
        """
        a JSON answer's bytes are held within the memory budget while they wait, \
        given back at the end, and one that does not fit is passed on unread
        """
    )
    func heldWithinBudget() {
        let answer = #"{"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":12,"completion_tokens":3}}"#
        let half = answer.utf8.count / 2
        let parts = [String(answer.prefix(half)), String(answer.dropFirst(half))]
        let roomy = MemoryBudget(capacity: 1 << 10)
        var meter = UsageMeter(
            provider: .openai, contentType: "application/json", hidesUsageChunk: false, fallbackModel: nil,
            memory: roomy)
        _ = meter.pass(ByteBuffer(string: parts[0]))
        #expect(roomy.reserved == parts[0].utf8.count)
        _ = meter.pass(ByteBuffer(string: parts[1]))
        #expect(meter.finish() == nil)
        #expect(meter.usage == TokenUsage(inputTokens: 12, outputTokens: 3) && roomy.reserved == 0)

        let tight = MemoryBudget(capacity: half + 1)
        var unread = UsageMeter(
            provider: .openai, contentType: "application/json", hidesUsageChunk: false, fallbackModel: nil,
            memory: tight)
        var passed = ""
        for part in parts { passed += String(buffer: unread.pass(ByteBuffer(string: part))) }
        #expect(passed == answer, "every byte passes unchanged")
        #expect(tight.reserved == 0)
        _ = unread.finish()
        #expect(unread.usage == nil)
    }

    @Test("an OpenAI stream's usage chunk is read, and held back only when Keyhaven asked for it")
    func openAIStream() {
        let events = [
            "data: "
                + "{\"id\":\"1\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":"
                + "[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
            "data: {\"id\":\"1\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,",
            "\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\ndata: [DONE]\n\n",
        ]
        let (hidden, meter) = run(.openai, "text/event-stream", hides: true, chunks: events)
        #expect(meter.model == "gpt-4o-2024-08-06")
        #expect(meter.usage == TokenUsage(inputTokens: 12, cachedInputTokens: 2, outputTokens: 3))
        #expect(hidden == events[0] + "data: [DONE]\n\n")
        let (shown, _) = run(.openai, "text/event-stream; charset=utf-8", chunks: events)
        #expect(shown == events.joined())
    }

    @Test("an Anthropic stream's usage comes from message_start and message_delta")
    func anthropicStream() {
        let events = [
            "event: message_start\r\ndata: "
                + "{\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\","
                + "\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":20,"
                + "\"cache_creation_input_tokens\":5,\"output_tokens\":1}}}\r\n\r\n",
            "event: content_block_delta\r\ndata: "
                + "{\"type\":\"content_block_delta\",\"delta\":{\"text\":\"usage\"}}\r\n\r\n",
            "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\r\n\r\n",
        ]
        let (passed, meter) = run(.anthropic, "text/event-stream", chunks: events)
        #expect(passed == events.joined())
        #expect(meter.model == "claude-sonnet-4-5")
        #expect(
            meter.usage == TokenUsage(inputTokens: 35, cachedInputTokens: 20, cacheWriteTokens: 5, outputTokens: 42))
    }

    @Test("Gemini's usageMetadata is read from an answer and from a streamed JSON array")
    func gemini() {
        let one =
            #"{"candidates":[],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":3,"#
            + #""thoughtsTokenCount":2,"cachedContentTokenCount":1},"modelVersion":"gemini-2.5-flash"}"#
        let (_, meter) = run(
            .gemini, "application/json; charset=UTF-8", chunks: [String(one.prefix(20)), String(one.dropFirst(20))])
        #expect(meter.model == "gemini-2.5-flash")
        #expect(meter.usage == TokenUsage(inputTokens: 7, cachedInputTokens: 1, outputTokens: 5, reasoningTokens: 2))
        let array =
            #"[{"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":1}},"#
            + #"{"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":9}}]"#
        #expect(
            run(.gemini, "application/json", chunks: [array]).1.usage == TokenUsage(inputTokens: 7, outputTokens: 9))
    }

    @Test("answers without usage, or not JSON, pass through and report none")
    func noUsage() {
        #expect(run(.openai, "application/json", chunks: ["{\"data\":[]}"]).1.usage == nil)
        #expect(run(.openai, "audio/mpeg", chunks: ["\u{1}\u{2}"]).0 == "\u{1}\u{2}")
        #expect(
            run(.openai, "application/json", chunks: ["{\"usage\": {\"prompt_tokens\": -5, \"x\": 1e300}"]).1.usage
                == nil)
    }

    @Test("a chat completion that streams gets include_usage; one that asked keeps its body")
    func streamOptions() throws {
        func inspect(_ text: String) -> InspectedBody {
            InspectedBody(body: Array(text.utf8), streamUsageOption: true)
        }
        let asked = inspect(#"{"model":"gpt-4o","stream":true}"#)
        #expect(asked.addsUsage)
        #expect(asked.model == "gpt-4o")
        #expect(
            String(decoding: asked.body, as: UTF8.self)
                == #"{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true}"#)
        let already = #"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}"#
        #expect(!inspect(already).addsUsage)
        #expect(inspect(already).body == Array(already.utf8))
        let unary = #"{"model":"gpt-4o"}"#
        #expect(inspect(unary).body == Array(unary.utf8))
        let partial = inspect(#"{"stream":true,"stream_options":{}}"#)
        let object = try JSONSerialization.jsonObject(with: Data(partial.body)) as? [String: Any]
        #expect((object?["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)
    }

    @Test("paths that could leave the provider's API are refused")
    func paths() {
        for good in [
            "/v1/chat/completions", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "/v1/files/file-abc",
        ] {
            #expect(Gateway.isSafePath(good))
        }
        for bad in [
            "/v1/../admin", "/v1//x", "/v1/%2e%2e/x", "/v1/a%2Fb", "v1/x", "/v1/a b", "/v1/\u{0}", "/v1/./x",
            "/v1/a\\b",
        ] {
            #expect(!Gateway.isSafePath(bad))
        }
        #expect(Gateway.withoutKey("alt=sse&key=abc") == "alt=sse")
        #expect(Gateway.withoutKey("key=abc") == nil)
        #expect(Gateway.geminiModel(in: "/v1beta/models/gemini-2.5-pro:generateContent") == "gemini-2.5-pro")
    }
}
