/// Every failure Keyhaven reports to a caller.
///
/// Each case names *what* went wrong in domain terms; how it is shown (an HTTP status, a CLI exit) is decided at
/// the edge. Messages are written for the person reading them and never carry a secret, SQL, or a key id.
public enum KeyhavenError: Error, Sendable, Equatable {
    /// The request could not be parsed at all (malformed JSON, a bad query parameter).
    case badRequest(String)
    /// No caller identity was presented, or it was not valid.
    case unauthenticated
    /// A login with a wrong email or password (the message does not say which).
    case invalidLogin
    /// The caller is known but not allowed to do this (wrong scope, missing CSRF token).
    case forbidden(String)
    /// The object does not exist, or belongs to someone else.
    case notFound
    /// A unique name is already taken, or the change would break a rule of the current state.
    case conflict(String)
    /// The integration is disabled: its credentials are not handed out (SPEC §6).
    case integrationDisabled
    /// The thing existed but is no longer usable (an invitation accepted, revoked or expired); the message says
    /// which.
    case gone(String)
    /// The request body is larger than the limit.
    case payloadTooLarge
    /// A gateway request body is larger than Keyhaven reads to meter it (`maximumBytes`), and a budget or token
    /// limit needs it metered.
    case tooLargeToMeter(maximumBytes: Int)
    /// The gateway does not meter this provider endpoint's usage, and a budget or token limit needs it metered;
    /// the message names the endpoint.
    case endpointNotMetered(String)
    /// The request body is not JSON.
    case unsupportedMediaType
    /// The input was understood but is invalid; `fields` maps each bad field to its problem.
    case validationFailed([String: String])
    /// Too many attempts; the caller may retry after the given number of seconds.
    case rateLimited(retryAfterSeconds: Int)
    /// A budget of the integration or its workspace is spent; the caller may retry after the given number of
    /// seconds (the start of the next month).
    case budgetExceeded(String, retryAfterSeconds: Int)
    /// A provider the gateway forwards to could not be reached, or its endpoint is not allowed.
    case providerUnreachable(String)
    /// A stored secret could not be decrypted: it was tampered with, moved to another row, or its key is wrong.
    case decryptionFailed
    /// The database, the audit trail, or the keyring is not available right now.
    case unavailable(String)
    /// A configuration value is missing or invalid; the message names the setting.
    case configuration(String)
    /// The master keyring does not fit the database (a key is missing or wrong); the message says which and why.
    case keyring(String)
    /// Something the caller cannot fix; the details were logged, not returned.
    case internalError

    /// A short, stable, machine-readable code for the error (the `code` of the JSON error body).
    public var code: String {
        switch self {
        case .badRequest: "bad_request"
        case .unauthenticated: "unauthenticated"
        case .invalidLogin: "invalid_login"
        case .forbidden: "forbidden"
        case .notFound: "not_found"
        case .conflict: "conflict"
        case .integrationDisabled: "integration_disabled"
        case .gone: "gone"
        case .payloadTooLarge, .tooLargeToMeter: "payload_too_large"
        case .endpointNotMetered: "endpoint_not_metered"
        case .unsupportedMediaType: "unsupported_media_type"
        case .validationFailed: "validation_failed"
        case .rateLimited: "rate_limited"
        case .budgetExceeded: "budget_exceeded"
        case .providerUnreachable: "provider_unreachable"
        case .decryptionFailed: "decryption_failed"
        case .unavailable: "unavailable"
        case .configuration: "configuration"
        case .keyring: "keyring"
        case .internalError: "internal_error"
        }
    }

    /// A human-readable sentence describing the error, safe to show to the caller.
    public var message: String {
        switch self {
        case .badRequest(let reason): reason
        case .unauthenticated: "Authentication is required."
        case .invalidLogin: "Invalid email or password."
        case .forbidden(let reason): reason
        case .notFound: "Not found."
        case .conflict(let reason): reason
        case .gone(let reason): reason
        case .integrationDisabled: "The integration is disabled; enable it to use its credentials."
        case .payloadTooLarge: "The request body is larger than 64 KiB."
        case .tooLargeToMeter(let maximum):
            "The request body is larger than the \(maximum) bytes Keyhaven reads to meter usage, which a budget or "
                + "token limit of this integration or its workspace needs."
        case .endpointNotMetered(let reason): reason
        case .unsupportedMediaType: "The request body must be JSON (Content-Type: application/json)."
        case .validationFailed: "Some fields are invalid."
        case .rateLimited: "Too many attempts. Try again later."
        case .budgetExceeded(let reason, _): reason
        case .providerUnreachable(let reason): reason
        case .decryptionFailed: "The stored credentials could not be decrypted."
        case .unavailable(let reason): reason
        case .configuration(let reason): reason
        case .keyring(let reason): reason
        case .internalError: "An internal error occurred."
        }
    }
}

extension KeyhavenError: CustomStringConvertible {
    public var description: String { message }
}
