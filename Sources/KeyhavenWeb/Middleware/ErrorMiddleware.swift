import Hummingbird
import KeyhavenCore
import Logging

/// Turns every error into the JSON error body of SPEC §6, so no route, framework error, or unexpected failure
/// answers with anything else; unexpected errors are logged and answered with a generic 500.
public struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let pages: PageRenderer?

    /// - Parameter pages: renders an HTML error page instead for a browser asking for a page outside the API.
    public init(pages: PageRenderer? = nil) {
        self.pages = pages
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as KeyhavenError {
            if case .keyring = error {
                context.logger.error("keyring failure", metadata: ["reason": "\(error.message)"])
            }
            return try error.response(from: request, context: context)
        } catch let error as HTTPResponseError {
            // Hummingbird's own errors (unknown route, body too large, undecodable body). Their messages can quote
            // decoder internals, so only the status is kept.
            let translated = Self.translate(error.status)
            if let pages, Self.wantsPage(request) {
                let language = Language.negotiate(
                    cookie: request.cookies[Language.cookieName]?.value, acceptLanguage: request.headers[.acceptLanguage])
                return pages.errorPage(translated, language: language, viewer: nil, path: "/")
            }
            return try translated.response(from: request, context: context)
        } catch {
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
