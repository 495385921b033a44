import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices
import KeyhavenWeb
import Logging

/// A page request that failed, with what its error page needs to know about the reader.
struct PageFailure: Error {
    let error: any Error
    let page: PageRequest
}

/// A form that came without its token (the session's CSRF token, or a signed-out reader's form token): 403, and a
/// page that says the form expired.
struct FormTokenRefused: Error {}

/// The one way the web interface shows a failure: an HTML page with the status, a message in the reader's
/// language, and the same header and language switch as every other page. ``ErrorMiddleware`` calls it for a failed
/// page route and for a browser's request that matched no route.
public struct ErrorPages: ErrorPageRendering {
    let renderer: PageRenderer
    let reader: PageReader
    let cookie: SessionCookie

    /// Creates the error pages over the renderer, and the stores that say who the reader is.
    public init(
        renderer: PageRenderer, sessions: any SessionStore, organizations: OrganizationService, cookie: SessionCookie
    ) {
        self.renderer = renderer
        self.cookie = cookie
        self.reader = PageReader(
            localization: renderer.localization, sessions: sessions, organizations: organizations, cookie: cookie)
    }

    /// The error page of a failed page handler, or of a browser's request for a page that matched no route (a
    /// framework error); nil for anything else, which the API's error body answers.
    public func page(for error: any Error, request: Request, logger: Logger) async -> Response? {
        if let failure = error as? PageFailure {
            return await response(for: failure.error, page: failure.page, request: request, logger: logger)
        }
        guard !(error is KeyhavenError), let framework = error as? HTTPResponseError,
            ErrorMiddleware<AppRequestContext>.wantsPage(request)
        else { return nil }
        let translated = ErrorMiddleware<AppRequestContext>.translate(framework.status)
        return await response(for: translated, page: nil, request: request, logger: logger)
    }

    public func underlying(_ error: any Error) -> any Error { (error as? PageFailure)?.error ?? error }

    /// The error page for `error`, for the reader of `page` (found from the request when not given). A domain error
    /// keeps its status; anything else is a 500, logged by its type alone.
    func response(
        for error: any Error, page known: PageRequest?, request: Request, logger: Logger
    ) async -> Response {
        let page: PageRequest
        if let known { page = known } else { page = await reader.page(request) }
        let failure: KeyhavenError
        switch error {
        case let error as KeyhavenError: failure = error
        case is FormTokenRefused: failure = .forbidden("The form is missing its token.")
        default:
            logger.error("page failed", metadata: ["error_type": "\(type(of: error))"])
            failure = .internalError
        }
        let (titleKey, bodyKey) = Self.keys(failure, formToken: error is FormTokenRefused)
        let view = ErrorPage(heading: page.texts[titleKey], message: page.texts[bodyKey])
        var response = renderer.page("error", view, title: view.heading, for: page, status: failure.status)
        switch failure {
        case .rateLimited(let seconds), .budgetExceeded(_, let seconds): response.headers[.retryAfter] = String(seconds)
        default: break
        }
        return page.settingFormCookie(on: response, cookie: cookie)
    }

    /// The title and the message for an error: what happened, and what to do next.
    static func keys(_ error: KeyhavenError, formToken: Bool) -> (title: String, body: String) {
        switch error {
        case .notFound: ("not_found_title", "not_found_body")
        case .forbidden: ("forbidden_title", formToken ? "forbidden_body" : "role_forbidden_body")
        case .rateLimited: ("error_title", "rate_limited")
        case .badRequest, .unsupportedMediaType: ("bad_request_title", "bad_request_body")
        case .payloadTooLarge: ("bad_request_title", "too_large_body")
        case .unavailable, .keyring: ("error_title", "unavailable_body")
        default: ("error_title", "error_body")
        }
    }
}

/// The error page.
struct ErrorPage: Sendable {
    let heading: String
    let message: String
}
