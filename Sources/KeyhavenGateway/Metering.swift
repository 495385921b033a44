import Foundation
import KeyhavenCore
import NIOCore
import NIOHTTP1

/// The provider endpoints whose usage the gateway can meter, in one place (SPEC §13; the README's gateway section
/// lists them too).
///
/// An endpoint is *metered* when its answer carries the provider's usage numbers, which ``UsageMeter`` reads, or,
/// when the answer ends without them, when Keyhaven can estimate them from the request (``estimate(bodyBytes:)``).
/// Endpoints that bill without saying so in their answer (OpenAI batches, background responses, images, audio,
/// files and fine-tuning; Anthropic message batches; Gemini batches and cached contents) are *unmetered*: under a
/// budget or token limit they are refused unless the owner allows them. Reads (`GET`, `HEAD`) and `DELETE` bill
/// nothing at any of the three providers, and neither do the few `POST`s listed as free (token counting,
/// moderation); those are always forwarded.
///
/// The lists are allow-lists on purpose: an endpoint a provider adds later is unmetered until it is listed here.
public enum MeteredEndpoints {
    /// How the gateway treats one request.
    public enum Kind: Sendable, Equatable {
        /// Bills nothing.
        case free
        /// Bills by tokens the answer reports; `streamUsageOption` when the request may ask for OpenAI's final usage
        /// chunk (`stream_options.include_usage`).
        case metered(streamUsageOption: Bool)
        /// May bill without the answer saying how much.
        case unmetered
    }

    /// OpenAI's metered `POST` paths; the chat and legacy completions take `stream_options`.
    static let openAI: [String: Bool] = [
        "/v1/chat/completions": true, "/v1/completions": true, "/v1/embeddings": false, "/v1/responses": false,
    ]
    static let openAIFree: Set<String> = ["/v1/moderations", "/v1/responses/input_tokens"]
    static let anthropic: Set<String> = ["/v1/messages"]
    static let anthropicFree: Set<String> = ["/v1/messages/count_tokens"]
    /// Gemini's metered methods, the last segment's suffix after the model (`models/gemini-2.5-flash:…`).
    static let gemini: Set<String> = [":generateContent", ":streamGenerateContent"]
    static let geminiFree: Set<String> = [":countTokens"]

    /// How a request with `method` to `path` of a `provider` integration is treated, from its path alone.
    public static func kind(_ provider: IntegrationType, method: HTTPMethod, path: String) -> Kind {
        switch method {
        case .GET, .HEAD, .DELETE: return .free
        case .POST: break
        default: return .unmetered
        }
        switch provider {
        case .openai:
            if let option = openAI[path] { return .metered(streamUsageOption: option) }
            return openAIFree.contains(path) ? .free : .unmetered
        case .anthropic:
            if anthropic.contains(path) { return .metered(streamUsageOption: false) }
            return anthropicFree.contains(path) ? .free : .unmetered
        case .gemini:
            // `/v1beta/models/gemini-2.5-flash:generateContent`, also under `/v1/` and for tuned models.
            let segments = path.split(separator: "/")
            guard segments.count == 3, ["v1", "v1beta", "v1alpha"].contains(segments[0]),
                ["models", "tunedModels"].contains(segments[1]), let colon = segments[2].firstIndex(of: ":")
            else { return .unmetered }
            let method = String(segments[2][colon...])
            if gemini.contains(method) { return .metered(streamUsageOption: false) }
            return geminiFree.contains(method) ? .free : .unmetered
        default:
            return .unmetered
        }
    }

    /// The most of a metered request's body read, by default, to learn its model, whether it streams, and its
    /// size; a longer body cannot be metered. The same bound as a fallback route's body, which is held whole anyway,
    /// so that a prompt with an inline image still fits.
    public static let inspectLimit = 8 << 20

    /// Input tokens estimated from a request body of `bodyBytes` bytes, for an answer that ended without usage:
    /// one token per 4 bytes of the whole body, rounded up, at least 1. Tokenizers average about 4 characters of
    /// English per token, and the JSON around the text only adds bytes, so the rule rarely undercounts a prompt;
    /// it is charged rather than nothing, and the event is marked estimated.
    public static func estimate(bodyBytes: Int) -> Int64 {
        max(1, Saturating.add(Int64(max(0, bodyBytes)), 3) / 4)
    }
}

extension Gateway {
    /// What the limits of an integration and its workspace ask of metering (``Budgets/admit(_:now:)``).
    public struct Metering: Sendable, Equatable {
        /// A budget or token limit applies: a metered request whose body is too large to read is refused (413).
        public var required: Bool
        /// Such a limit applies and its owner did not allow unmetered endpoints: they are refused (403).
        public var refusesUnmetered: Bool

        /// Creates the requirement.
        public init(required: Bool, refusesUnmetered: Bool) {
            self.required = required
            self.refusesUnmetered = refusesUnmetered
        }

        /// No limit counts usage: everything is forwarded, metered where the gateway can.
        public static let optional = Metering(required: false, refusesUnmetered: false)
    }
}

/// A metered request's body, decoded as JSON (escapes such as `"str\u0065am"` read as the provider reads them,
/// whatever the body's framing): its model, whether it streams, and, for an OpenAI completion that streams without
/// asking for usage, the body with `stream_options.include_usage` added.
struct InspectedBody {
    /// What to send.
    let body: [UInt8]
    /// The model the request names, if it is one Keyhaven may store.
    let model: String?
    /// Whether `stream_options.include_usage` was added (the caller streams and did not ask for usage).
    let addsUsage: Bool
    /// Whether the answer comes later than the request (OpenAI's `background: true`): it bills without usage.
    let deferred: Bool

    init(body original: [UInt8], streamUsageOption: Bool) {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(original))) as? [String: Any] else {
            // Not a JSON object: the provider refuses it, or answers it without a model Keyhaven could read here.
            (body, model, addsUsage, deferred) = (original, nil, false, false)
            return
        }
        model = ModelName.validated(object["model"] as? String)
        deferred = (object["background"] as? Bool) == true
        let streams = (object["stream"] as? Bool) == true
        let options = object["stream_options"] as? [String: Any]
        guard streamUsageOption, streams, (options?["include_usage"] as? Bool) != true else {
            (body, addsUsage) = (original, false)
            return
        }
        addsUsage = true
        if object["stream_options"] == nil, let brace = original.firstIndex(of: UInt8(ascii: "{")) {
            // Insert the option and keep every other byte as the caller wrote it.
            let option = Array("\"stream_options\":{\"include_usage\":true},".utf8)
            var changed = original
            changed.insert(contentsOf: option, at: brace + 1)
            body = changed
        } else {
            var rewritten = object
            var merged = options ?? [:]
            merged["include_usage"] = true
            rewritten["stream_options"] = merged
            body = (try? JSONSerialization.data(withJSONObject: rewritten)).map(Array.init) ?? original
        }
    }
}

/// A caller's body whose first bytes were read already (to inspect it): those, then the rest from the same iterator.
///
/// `@unchecked Sendable`: a request body can be iterated once only, so the iterator that read the first bytes is the
/// one that reads the rest; it moves here from the forwarding task and is then used by that task alone, as the
/// upstream connection writes the body.
struct ResumedBody<Base: AsyncIteratorProtocol>: AsyncSequence, @unchecked Sendable where Base.Element == ByteBuffer {
    typealias Element = ByteBuffer
    let first: ByteBuffer
    let rest: Base?

    struct AsyncIterator: AsyncIteratorProtocol {
        var first: ByteBuffer?
        var rest: Base?

        mutating func next() async throws -> ByteBuffer? {
            if let pending = first {
                first = nil
                if pending.readableBytes > 0 { return pending }
            }
            guard var iterator = rest else { return nil }
            let next = try await iterator.next()
            rest = next == nil ? nil : iterator
            return next
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(first: first, rest: rest) }
}
