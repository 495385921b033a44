import Foundation
import KeyhavenCore

/// The result of one check. `details` never holds a secret (an AWS ARN, a model count).
public struct VerificationResult: Sendable {
    public var outcome: VerificationOutcome
    /// What the provider said, sanitised of the credentials, if anything useful: the English of ``detail``.
    public var providerMessage: String?
    /// What the check found beyond its outcome, with its code.
    public var detail: VerificationDetail?
    public var details: [String: JSONValue]
    public var latency: Duration

    /// A result; `detail` gives its English text to ``providerMessage``.
    public init(
        outcome: VerificationOutcome, detail: VerificationDetail? = nil, details: [String: JSONValue] = [:],
        latency: Duration = .zero
    ) {
        self.outcome = outcome
        self.detail = detail
        self.providerMessage = detail?.text
        self.details = details
        self.latency = latency
    }

    /// The text stored in `error_message` (nil when connected).
    public var errorMessage: String? {
        guard outcome != .connected else { return nil }
        guard let providerMessage, !providerMessage.isEmpty else { return outcome.message() }
        return "\(outcome.message()) \(providerMessage)"
    }
}

/// Removes every run of a secret that is 5 or more characters long from a provider's text, so an error that
/// echoes a key keeps at most 4 characters of it; the result is also cut to a readable length.
public enum Sanitizer {
    public static func clean(_ text: String, secrets: [String], limit: Int = 300) -> String {
        var characters = Array(text)
        var hidden = [Bool](repeating: false, count: characters.count)
        for secret in secrets {
            let key = Array(secret)
            guard key.count >= 5 else { continue }
            var grams = Set<String>()
            for start in 0...(key.count - 5) { grams.insert(String(key[start..<start + 5])) }
            guard characters.count >= 5 else { continue }
            for start in 0...(characters.count - 5) where grams.contains(String(characters[start..<start + 5])) {
                for index in start..<start + 5 { hidden[index] = true }
            }
        }
        var result = ""
        var index = 0
        while index < characters.count {
            if hidden[index] {
                result += "[redacted]"
                while index < characters.count && hidden[index] { index += 1 }
            } else {
                result.append(characters[index])
                index += 1
            }
        }
        characters = Array(result.split(whereSeparator: \.isNewline).joined(separator: " "))
        return characters.count > limit ? String(characters.prefix(limit)) + "…" : String(characters)
    }
}
