import Hummingbird
import KeyhavenCore
import Logging

/// Turns every error into the JSON error body of SPEC §6, so no route, framework error, or unexpected failure
/// answers with anything else; unexpected errors are logged and answered with a generic 500. A failed web page, and
/// a browser's request for a page that matched no route, get the HTML error page of ``ErrorPages`` instead.
public struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let pages: ErrorPages?

    /// - Parameter pages: renders the HTML error pages.
    public init(pages: ErrorPages? = nil) {
        self.pages = pages
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let failure as PageFailure {
            if let pages {
                return await pages.response(
                    for: failure.error, page: failure.page, request: request, logger: context.logger)
            }
            return try answer(failure.error, request: request, context: context)
        } catch {
            if let pages, !(error is KeyhavenError), let framework = error as? HTTPResponseError,
                Self.wantsPage(request)
            {
                let translated = Self.translate(framework.status)
                return await pages.response(for: translated, page: nil, request: request, logger: context.logger)
            }
            return try answer(error, request: request, context: context)
        }
    }

    /// The JSON answer for any error.
    private func answer(_ error: any Error, request: Request, context: Context) throws -> Response {
        switch error {
        case let error as KeyhavenError:
            if case .keyring = error {
                context.logger.error("keyring failure", metadata: ["reason": "\(error.message)"])
            }
            return try error.response(from: request, context: context)
        case let error as HTTPResponseError:
            // Hummingbird's own errors (unknown route, body too large, undecodable body). Their messages can quote
            // decoder internals, so only the status is kept.
            return try Self.translate(error.status).response(from: request, context: context)
        default:
            context.logger.error("unexpected error", metadata: ["error_type": "\(type(of: error))"])
            return try KeyhavenError.internalError.response(from: request, context: context)
        }
    }

    /// A browser navigating to a page (not the API, health checks or metrics).
    static func wantsPage(_ request: Request) -> Bool {
        let path = request.uri.path
        return !path.hasPrefix("/api/") && path != "/api" && !["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(path)
            && (request.headers[.accept] ?? "").contains("text/html")
    }

    static func translate(_ status: HTTPResponse.Status) -> KeyhavenError {
        switch status {
        case .notFound: .notFound
        case .contentTooLarge: .payloadTooLarge
        case .unsupportedMediaType: .unsupportedMediaType
        case .unauthorized: .unauthenticated
        case .forbidden: .forbidden("This action is not allowed.")
        case .methodNotAllowed: .badRequest("This method is not allowed on this route.")
        case .tooManyRequests: .rateLimited(retryAfterSeconds: 1)
        case .serviceUnavailable: .unavailable("The service is temporarily unavailable.")
        case _ where status.code >= 400 && status.code < 500: .badRequest("The request is malformed.")
        default: .internalError
        }
    }
}
