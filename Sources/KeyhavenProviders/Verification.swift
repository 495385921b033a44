import Foundation
import KeyhavenCore

/// What a connectivity check concluded (SPEC §7).
public enum VerificationOutcome: String, Sendable, CaseIterable, Error {
    case connected
    case invalidCredentials = "invalid_credentials"
    case expired
    case insufficientPermissions = "insufficient_permissions"
    case rateLimited = "rate_limited"
    case unreachable = "provider_unreachable"
    case unexpectedResponse = "unexpected_response"
    /// The endpoint was refused by the egress policy before any request was made.
    case endpointNotAllowed = "endpoint_not_allowed"

    /// The sentence shown to users, in English (`en`) or Spanish (`es`).
    public func message(language: String = "en") -> String {
        let spanish = language.lowercased().hasPrefix("es")
        switch self {
        case .connected: return spanish ? "Conectado." : "Connected."
        case .invalidCredentials:
            return spanish ? "El proveedor rechazó las credenciales." : "The provider rejected the credentials."
        case .expired: return spanish ? "Las credenciales han caducado." : "The credentials have expired."
        case .insufficientPermissions:
            return spanish
                ? "Las credenciales son válidas pero no tienen los permisos necesarios."
                : "The credentials are valid but lack the required permissions."
        case .rateLimited:
            return spanish
                ? "El proveedor está limitando las solicitudes; inténtalo más tarde."
                : "The provider is rate limiting requests; try again later."
        case .unreachable: return spanish ? "No se pudo contactar con el proveedor." : "The provider could not be reached."
        case .unexpectedResponse:
            return spanish ? "El proveedor dio una respuesta inesperada." : "The provider gave an unexpected response."
        case .endpointNotAllowed:
            return spanish
                ? "La política de salida no permite contactar con este destino."
                : "The egress policy does not allow this endpoint."
        }
    }
}

/// The result of one check. `details` never holds a secret (an AWS ARN, a model count).
public struct VerificationResult: Sendable {
    public var outcome: VerificationOutcome
    /// What the provider said, sanitised of the credentials, if anything useful.
    public var providerMessage: String?
    public var details: [String: JSONValue]
    public var latency: Duration

    public init(outcome: VerificationOutcome, providerMessage: String? = nil, details: [String: JSONValue] = [:], latency: Duration = .zero) {
        self.outcome = outcome
        self.providerMessage = providerMessage
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
