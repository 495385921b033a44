import Foundation
import KeyhavenCore
import NIOCore

/// Reads the provider's own usage numbers from an answer as it streams past (SPEC §13): OpenAI `usage` (chat
/// completions, responses, embeddings, and the final chunk of a stream), Anthropic `usage` (and `message_start` /
/// `message_delta` in streams, cache reads and writes included), Gemini `usageMetadata`, Cohere `billed_units`.
///
/// Bytes pass through unchanged, chunk by chunk, except the one OpenAI chunk Keyhaven asked for on the caller's
/// behalf (`stream_options.include_usage`), which is held back when the caller did not ask for it themselves.
public struct UsageMeter: Sendable {
    /// How the answer is framed.
    enum Framing: Sendable {
        /// One JSON document (or a JSON array of them: Gemini's non-SSE stream), read at the end.
        case json
        /// Server-sent events, read event by event.
        case events
        /// Anything else: nothing to read.
        case opaque
    }

    /// The most of a JSON answer kept to read its usage; a longer answer is passed on without it.
    static let jsonLimit = 8 << 20
    /// The longest single server-sent event read; a longer one is passed on without reading it.
    static let eventLimit = 1 << 20

    /// How the provider reports usage.
    let format: ProviderEntry.UsageFormat
    let framing: Framing
    /// Whether the usage-only chunk of an OpenAI stream is held back (Keyhaven asked for it, the caller did not).
    let hidesUsageChunk: Bool
    /// JSON answer so far, or the unfinished event.
    private var pending: [UInt8] = []
    private var overflowed = false
    /// The memory a JSON answer's bytes hold while they wait to be read; nil without a budget.
    private let held: MemoryBudget.Reservation?
    /// The model the provider says answered.
    public private(set) var model: String?
    /// The usage fields seen so far, flattened (`prompt_tokens_details.cached_tokens`); later values win, as
    /// streams repeat cumulative counts.
    private var counts: [String: Int64] = [:]

    /// A meter for an answer with `contentType`; `fallbackModel` is the model named by the request. A JSON answer's
    /// bytes are held within `memory`: one it cannot hold is passed on without its usage (and charged an estimate).
    public init(
        provider: IntegrationType, contentType: String?, hidesUsageChunk: Bool, fallbackModel: String?,
        memory: MemoryBudget? = nil
    ) {
        // The gateway meters only providers with gateway rules; OpenAI's shape is what the others copy.
        format = provider.entry?.gateway?.usage ?? .openai
        let type = contentType?.lowercased() ?? ""
        framing = type.hasPrefix("text/event-stream") ? .events : (type.contains("json") ? .json : .opaque)
        held = framing == .json ? memory?.reserve(0) : nil
        self.hidesUsageChunk = hidesUsageChunk && framing == .events
        model = fallbackModel
    }

    /// Reads `chunk` and returns what to pass on: the chunk itself, or (while holding back a chunk) the complete
    /// events it finished, which may be empty.
    public mutating func pass(_ chunk: ByteBuffer) -> ByteBuffer {
        switch framing {
        case .opaque:
            return chunk
        case .json:
            if !overflowed {
                if pending.count + chunk.readableBytes > Self.jsonLimit || held?.grow(by: chunk.readableBytes) == false
                {
                    overflowed = true
                    pending = []
                    held?.release()
                } else {
                    pending.append(contentsOf: chunk.readableBytesView)
                }
            }
            return chunk
        case .events:
            pending.append(contentsOf: chunk.readableBytesView)
            var passed = ByteBuffer()
            while let end = Self.eventEnd(in: pending) {
                let event = Array(pending[..<end])
                pending.removeFirst(end)
                if !read(event: event), hidesUsageChunk { continue }
                if hidesUsageChunk { passed.writeBytes(event) }
            }
            if pending.count > Self.eventLimit {
                // An event this long carries no usage worth reading; pass it on and stop looking into it.
                if hidesUsageChunk { passed.writeBytes(pending) }
                pending = []
            }
            return hidesUsageChunk ? passed : chunk
        }
    }

    /// Reads what is left at the end of the answer; returns bytes still held back, if any.
    public mutating func finish() -> ByteBuffer? {
        defer {
            pending = []
            held?.release()
        }
        switch framing {
        case .opaque:
            return nil
        case .json:
            if !overflowed, let object = try? JSONSerialization.jsonObject(with: Data(pending)) {
                if let list = object as? [Any] {
                    for case let element as [String: Any] in list { absorb(element) }
                } else if let document = object as? [String: Any] {
                    absorb(document)
                }
            }
            return nil
        case .events:
            guard !pending.isEmpty else { return nil }
            let rest = pending
            let keep = read(event: rest)
            return hidesUsageChunk && keep ? ByteBuffer(bytes: rest) : nil
        }
    }

    /// The usage the provider reported, normalised; nil when it reported none.
    public var usage: TokenUsage? {
        guard !counts.isEmpty else { return nil }
        func count(_ keys: String...) -> Int64 { keys.lazy.compactMap { counts[$0] }.first ?? 0 }
        switch format {
        case .anthropic:
            let (fresh, read, written) = (
                count("input_tokens"), count("cache_read_input_tokens"), count("cache_creation_input_tokens")
            )
            return TokenUsage(
                inputTokens: fresh + read + written, cachedInputTokens: read, cacheWriteTokens: written,
                outputTokens: count("output_tokens"))
        case .gemini:
            let thoughts = count("thoughtsTokenCount")
            return TokenUsage(
                inputTokens: count("promptTokenCount"), cachedInputTokens: count("cachedContentTokenCount"),
                outputTokens: count("candidatesTokenCount") + thoughts, reasoningTokens: thoughts)
        case .cohere:
            return TokenUsage(inputTokens: count("input_tokens"), outputTokens: count("output_tokens"))
        case .openai:
            return TokenUsage(
                inputTokens: count("prompt_tokens", "input_tokens"),
                cachedInputTokens: count("prompt_tokens_details.cached_tokens", "input_tokens_details.cached_tokens"),
                outputTokens: count("completion_tokens", "output_tokens"),
                reasoningTokens: count(
                    "completion_tokens_details.reasoning_tokens", "output_tokens_details.reasoning_tokens"))
        }
    }

    /// The offset just past the blank line that ends the first complete event, if there is one.
    static func eventEnd(in bytes: [UInt8]) -> Int? {
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\n") {
                var next = index + 1
                if next < bytes.count, bytes[next] == UInt8(ascii: "\r") { next += 1 }
                if next < bytes.count, bytes[next] == UInt8(ascii: "\n") { return next + 1 }
            }
            index += 1
        }
        return nil
    }

    /// Reads one event's data; returns whether the event is passed on (false only for the held-back chunk).
    private mutating func read(event: [UInt8]) -> Bool {
        // Only events that can carry usage or the model are parsed.
        guard Self.contains(event, "usage") || (model == nil && Self.contains(event, "model")) else { return true }
        var data: [UInt8] = []
        for line in event.split(separator: UInt8(ascii: "\n")) {
            var line = line
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            guard line.starts(with: Array("data:".utf8)) else { continue }
            var value = line.dropFirst(5)
            if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
            if !data.isEmpty { data.append(UInt8(ascii: "\n")) }
            data.append(contentsOf: value)
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(data))) as? [String: Any] else { return true }
        absorb(object)
        if hidesUsageChunk, format == .openai, let choices = object["choices"] as? [Any], choices.isEmpty,
            object["usage"] is [String: Any]
        {
            return false
        }
        return true
    }

    /// Takes the model and usage from one answer or event, wherever the provider puts them.
    private mutating func absorb(_ object: [String: Any]) {
        switch format {
        case .anthropic:
            // `message_start` nests the message; `message_delta` has usage at the top.
            if let message = object["message"] as? [String: Any] {
                take(model: message["model"])
                take(usage: message["usage"])
            }
            take(model: object["model"])
            take(usage: object["usage"])
        case .gemini:
            take(model: object["modelVersion"])
            take(usage: object["usageMetadata"])
        case .cohere:
            // What is billed: v2's `usage` (in a stream, the `message-end` event's delta), v1's `meta`.
            take(model: object["model"])
            let delta = object["delta"] as? [String: Any]
            for container in [object["usage"], delta?["usage"], object["meta"]] {
                take(usage: (container as? [String: Any])?["billed_units"])
            }
        case .openai:
            // The Responses API's stream events nest the response.
            let response = object["response"] as? [String: Any] ?? object
            take(model: response["model"])
            take(usage: response["usage"])
        }
    }

    private mutating func take(model value: Any?) {
        if let name = value as? String, ModelName.isValid(name) { model = name }
    }

    private mutating func take(usage value: Any?, prefix: String = "") {
        guard let fields = value as? [String: Any] else { return }
        for (key, value) in fields {
            if let nested = value as? [String: Any], prefix.isEmpty {
                take(usage: nested, prefix: key + ".")
            } else if let number = value as? NSNumber {
                let double = number.doubleValue
                guard double.isFinite, double >= 0, double < 1e15 else { continue }
                counts[prefix + key] = Int64(double)
            }
        }
    }

    /// Whether `bytes` contain `word` in quotes.
    static func contains(_ bytes: [UInt8], _ word: String) -> Bool {
        let needle = Array("\"\(word)".utf8)
        guard bytes.count >= needle.count else { return false }
        var index = 0
        let limit = bytes.count - needle.count
        while index <= limit {
            if bytes[index] == needle[0], bytes[index..<index + needle.count].elementsEqual(needle) { return true }
            index += 1
        }
        return false
    }
}
