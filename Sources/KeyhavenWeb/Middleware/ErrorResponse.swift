import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices
import Logging
import NIOCore

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

/// An error as it is answered, status, headers and the JSON body of SPEC §6, made the same way for the router and
/// for the gateway's own listener, which writes it without Hummingbird.
public struct ErrorAnswer: Sendable {
    public var status: HTTPResponse.Status
    public var headers: HTTPFields
    public var body: ByteBuffer

    init(status: HTTPResponse.Status, _ body: ErrorBody) {
        self.status = status
        self.headers = [.contentType: jsonContentType]
        self.body = jsonBytes(body)
    }

    /// The answer as a router response.
    public var response: Response { Response(status: status, headers: headers, body: .init(byteBuffer: body)) }

    /// The answer to any error, as every route gives it: a domain error's own; a framework error's status as its
    /// domain error (their messages can quote decoder internals, so only the status is kept); a full memory budget
    /// as `503` with `Retry-After`; anything else a generic `500`, logged by its type alone.
    public static func answering(_ error: any Error, logger: Logger) -> ErrorAnswer {
        switch error {
        case let error as KeyhavenError:
            if case .keyring = error {
                logger.error("keyring failure", metadata: ["reason": "\(error.message)"])
            }
            return error.answer
        case is GatewayBusy:
            var answer = GatewayBusy.error.answer
            answer.headers[.retryAfter] = String(GatewayBusy.retryAfterSeconds)
            return answer
        case let error as HTTPResponseError:
            return ErrorMiddleware<AppRequestContext>.translate(error.status).answer
        default:
            logger.error("unexpected error", metadata: ["error_type": "\(type(of: error))"])
            return KeyhavenError.internalError.answer
        }
    }

    /// `405` naming the methods the path has (RFC 9110 §15.5.6).
    static func methodNotAllowed(allowed: [String]) -> ErrorAnswer {
        var answer = ErrorAnswer(
            status: .methodNotAllowed,
            ErrorBody(error: .init(code: "method_not_allowed", message: "This method is not allowed on this route.")))
        answer.headers[.allow] = allowed.joined(separator: ", ")
        return answer
    }
}

extension KeyhavenError: HTTPResponseError {
    /// The HTTP status for each domain error (SPEC §6), ``httpStatus``.
    public var status: HTTPResponse.Status { httpStatus }

    /// The error's answer. Keyring and configuration messages name keys and settings, so callers get a generic
    /// sentence instead; the operator finds the details in the log.
    public var answer: ErrorAnswer {
        var fields: [String: String]?
        if case .validationFailed(let problems) = self { fields = problems }
        let message: String
        switch self {
        case .keyring: message = "The service is temporarily unavailable."
        case .configuration: message = KeyhavenError.internalError.message
        default: message = self.message
        }
        var answer = ErrorAnswer(status: status, ErrorBody(error: .init(code: code, message: message, fields: fields)))
        switch self {
        case .rateLimited(let seconds), .budgetExceeded(_, let seconds): answer.headers[.retryAfter] = String(seconds)
        default: break
        }
        return answer
    }

    /// The JSON error body, as a router response.
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        answer.response
    }
}
