import Foundation

/// What went wrong with a call, typed by the server's answer (SPEC §6). Messages are the server's, which never
/// carry a secret.
public enum KeyhavenClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 404: the object does not exist or belongs to someone else.
    case notFound
    /// 401: no valid token was presented.
    case unauthenticated
    /// 403: the token is known but not allowed (a missing scope, the wrong kind of token).
    case forbidden(message: String)
    /// 429: too many attempts; retry after the delay.
    case rateLimited(retryAfter: Duration)
    /// 422: invalid input; `fields` maps each bad field (`name`, `credentials.access_key_id`) to its problem.
    case validation(fields: [String: String], message: String)
    /// 409: a name is taken, or the integration is disabled (`code` says which).
    case conflict(code: String, message: String)
    /// 503: the server's storage, audit trail or keyring is unavailable; retry later.
    case unavailable(message: String)
    /// 400, 413 or 415: the server could not read the request.
    case badRequest(message: String)
    /// Any other error status (a 500), with the body's code.
    case server(status: Int, code: String, message: String)
    /// The server's answer was not the JSON the API describes.
    case invalidResponse(status: Int)
    /// The server could not be reached or did not answer in time.
    case transport(String)
    /// The arguments cannot be sent (an unusable base URL, an unreadable key file).
    case invalidInput(String)

    /// A one-line explanation.
    public var description: String {
        switch self {
        case .notFound: "Not found."
        case .unauthenticated: "Authentication is required."
        case .forbidden(let message): "Forbidden: \(message)"
        case .rateLimited(let delay): "Rate limited; retry after \(delay.components.seconds) s."
        case .validation(let fields, _):
            "Invalid: " + fields.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: "; ")
        case .conflict(_, let message): "Conflict: \(message)"
        case .unavailable(let message): "Unavailable: \(message)"
        case .badRequest(let message): "Bad request: \(message)"
        case .server(let status, let code, let message): "Server error \(status) (\(code)): \(message)"
        case .invalidResponse(let status): "Unexpected response (HTTP \(status))."
        case .transport(let reason): "Could not reach the server: \(reason)"
        case .invalidInput(let reason): reason
        }
    }

    /// The error for a non-2xx answer.
    static func from(status: Int, body: Data, retryAfter: String?) -> KeyhavenClientError {
        struct Body: Decodable {
            struct Detail: Decodable {
                var code: String
                var message: String
                var fields: [String: String]?
            }
            var error: Detail
        }
        guard let detail = try? JSONDecoder().decode(Body.self, from: body).error else {
            return .invalidResponse(status: status)
        }
        switch status {
        case 400, 413, 415: return .badRequest(message: detail.message)
        case 401: return .unauthenticated
        case 403: return .forbidden(message: detail.message)
        case 404: return .notFound
        case 409: return .conflict(code: detail.code, message: detail.message)
        case 422: return .validation(fields: detail.fields ?? [:], message: detail.message)
        case 429:
            let seconds = retryAfter.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }.map { max(0, $0) } ?? 1
            return .rateLimited(retryAfter: .seconds(seconds))
        case 503: return .unavailable(message: detail.message)
        default: return .server(status: status, code: detail.code, message: detail.message)
        }
    }
}
