import Hummingbird
import KeyhavenCore
import Logging

/// The HTML error pages of the web interface, as the error middleware asks for them.
public protocol ErrorPageRendering: Sendable {
    /// The error page for `error` if it is a page's (a failed page handler, or a browser's request for a page that
    /// matched no route); nil to answer it as the API does.
    func page(for error: any Error, request: Request, logger: Logger) async -> Response?

    /// The error a failed page handler carries, to answer as the API does when no page is rendered.
    func underlying(_ error: any Error) -> any Error
}

/// Turns every error into the JSON error body of SPEC §6, so no route, framework error, or unexpected failure
/// answers with anything else; unexpected errors are logged and answered with a generic 500. A failed web page, and
/// a browser's request for a page that matched no route, get the HTML error page of `pages` instead.
public struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let pages: (any ErrorPageRendering)?

    /// - Parameter pages: renders the HTML error pages.
    public init(pages: (any ErrorPageRendering)? = nil) {
        self.pages = pages
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            if let pages {
                if let page = await pages.page(for: error, request: request, logger: context.logger) { return page }
                return try answer(pages.underlying(error), request: request, context: context)
            }
            return try answer(error, request: request, context: context)
        }
    }

    /// The JSON answer for any error (``ErrorAnswer/answering(_:logger:)``).
    private func answer(_ error: any Error, request: Request, context: Context) throws -> Response {
        ErrorAnswer.answering(error, logger: context.logger).response
    }

    /// A browser navigating to a page (not the API, health checks or metrics).
    public static func wantsPage(_ request: Request) -> Bool {
        let path = request.uri.path
        return !path.hasPrefix("/api/") && path != "/api"
            && !["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(path)
            && (request.headers[.accept] ?? "").contains("text/html")
    }

    /// The domain error a framework error's status stands for.
    public static func translate(_ status: HTTPResponse.Status) -> KeyhavenError {
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
