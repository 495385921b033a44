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
/// nothing at any of the providers, and neither do the few `POST`s listed as free (token counting,
/// moderation); those are always forwarded.
///
/// The lists, in the provider catalog, are allow-lists on purpose: an endpoint a provider adds later is unmetered
/// until it is listed there.
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

    /// How a request with `method` to `path` of a `provider` integration is treated, from its path alone: the
    /// provider's catalog entry lists its metered and free `POST` paths (SPEC §16).
    public static func kind(_ provider: IntegrationType, method: HTTPMethod, path: String) -> Kind {
        switch method {
        case .GET, .HEAD, .DELETE: return .free
        case .POST: break
        default: return .unmetered
        }
        guard let rules = provider.entry?.gateway else { return .unmetered }
        if let metered = rules.metered.first(where: { $0.path.matches(path) }) {
            return .metered(streamUsageOption: metered.streamUsageOption)
        }
        return rules.free.contains { $0.matches(path) } ? .free : .unmetered
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
