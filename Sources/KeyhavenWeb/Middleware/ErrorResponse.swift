import Foundation
import Hummingbird
import KeyhavenCore

/// The JSON error body of SPEC §6: `{"error": {"code", "message", "fields"?}}`.
struct ErrorBody: ResponseBody {
    struct Detail {
        var code: String
        var message: String
        var fields: [String: String]?
    }
    var error: Detail

    var json: JSONValue {
        var detail: [String: JSONValue] = ["code": .string(error.code), "message": .string(error.message)]
        if let fields = error.fields { detail["fields"] = .object(fields.mapValues { .string($0) }) }
        return .object(["error": .object(detail)])
    }
}

extension KeyhavenError: HTTPResponseError {
    /// The HTTP status for each domain error (SPEC §6).
    public var status: HTTPResponse.Status {
        switch self {
        case .badRequest: .badRequest
        case .unauthenticated, .invalidLogin: .unauthorized
        case .forbidden, .endpointNotMetered: .forbidden
        case .notFound: .notFound
        case .conflict, .integrationDisabled: .conflict
        case .gone: .gone
        case .payloadTooLarge, .tooLargeToMeter: .contentTooLarge
        case .unsupportedMediaType: .unsupportedMediaType
        case .validationFailed: .unprocessableContent
        case .rateLimited, .budgetExceeded: .tooManyRequests
        case .providerUnreachable: .badGateway
        // A secret that does not open is the server's problem, not the caller's; the details are in the log.
        case .decryptionFailed, .internalError, .configuration: .internalServerError
        case .unavailable, .keyring: .serviceUnavailable
        }
    }

    /// The JSON error body. Keyring and configuration messages name keys and settings, so callers get a generic
    /// sentence instead; the operator finds the details in the log.
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var fields: [String: String]?
        if case .validationFailed(let problems) = self { fields = problems }
        let message: String
        switch self {
        case .keyring: message = "The service is temporarily unavailable."
        case .configuration: message = KeyhavenError.internalError.message
        default: message = self.message
        }
        var response = Response.json(
            status: status, ErrorBody(error: .init(code: code, message: message, fields: fields)))
        switch self {
        case .rateLimited(let seconds), .budgetExceeded(_, let seconds): response.headers[.retryAfter] = String(seconds)
        default: break
        }
        return response
    }
}
