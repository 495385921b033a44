import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices
import KeyhavenWeb

/// The signed-in reader of a page, with the organizations they belong to (for the workspace switcher).
struct Viewer: Sendable {
    let user: User
    let session: Session
    let organizations: [(Organization, WorkspaceRole)]

    /// The reader as the services see them, with the actor of their audit events.
    func caller(_ request: Request, _ context: AppRequestContext) -> UserCaller {
        UserCaller(
            user: user, credential: .session(session), ip: context.clientAddress, userAgent: request.headers[.userAgent]
        )
    }

    /// The name of a workspace the reader belongs to, if they do.
    func workspaceName(_ id: UUID, texts: Texts) -> String? {
        id == user.id ? texts["personal_workspace"] : organizations.first { $0.0.id == id }?.0.name
    }
}

/// What every page handler knows about its request.
struct PageRequest: Sendable {
    /// The reader's language's texts.
    let texts: Texts
    /// The path and query, for the language switch to come back to.
    let path: String
    let viewer: Viewer?
    /// A signed-out reader's form token (nil for a signed-in one, whose forms carry the session's CSRF token): the
    /// form cookie's, or a new one that the response sets.
    var formToken: String? = nil
    /// Whether `formToken` is new, so the response must set the form cookie.
    var setsFormCookie = false

    /// The reader's language.
    var language: Language { texts.language }

    /// Sets the form cookie on `response` when the page made a new form token and nothing else set it.
    func settingFormCookie(on response: Response, cookie: SessionCookie) -> Response {
        guard setsFormCookie, let formToken,
            !response.headers[values: .setCookie].contains(where: { $0.hasPrefix(cookie.formName + "=") })
        else { return response }
        var response = response
        response.setCookie(cookie.formCookie(formToken))
        return response
    }
}

/// Reads what a page needs to know about its request: the language, the signed-in reader (from the identity the
/// authentication middleware found), and a signed-out reader's form token.
struct PageReader: Sendable {
    let localization: Localization
    let organizations: OrganizationService
    let cookie: SessionCookie
    /// The pages' authentication: the session cookie alone.
    let authentication: AuthenticationMiddleware

    init(
        localization: Localization, sessions: any SessionStore, organizations: OrganizationService,
        cookie: SessionCookie
    ) {
        self.localization = localization
        self.organizations = organizations
        self.cookie = cookie
        self.authentication = AuthenticationMiddleware(sessions: sessions, cookieName: cookie.name)
    }

    /// The page request of a route behind ``authentication``: the reader is the identity it found.
    func page(_ request: Request, identity: Identity?) async throws -> PageRequest {
        guard case .user(let user, .session(let session))? = identity else { return page(request, viewer: nil) }
        return page(request, viewer: try await viewer(user, session))
    }

    /// The page request of any other request (an error outside the pages' routes): the session cookie is read by
    /// ``authentication`` here; if the database cannot say, the reader is shown signed out.
    func page(_ request: Request) async -> PageRequest {
        guard let (session, user) = (try? await authentication.session(of: request)) ?? nil,
            let viewer = try? await viewer(user, session)
        else { return page(request, viewer: nil) }
        return page(request, viewer: viewer)
    }

    private func viewer(_ user: User, _ session: Session) async throws -> Viewer {
        let caller = UserCaller(user: user, credential: .session(session), ip: nil, userAgent: nil)
        return Viewer(user: user, session: session, organizations: try await organizations.list(by: caller))
    }

    private func page(_ request: Request, viewer: Viewer?) -> PageRequest {
        var page = PageRequest(
            texts: texts(request), path: WebPages.localPath(request.uri.description) ?? "/", viewer: viewer)
        if viewer == nil {
            let existing = request.cookies[cookie.formName]?.value
            page.formToken = existing.flatMap { $0.utf8.count == 43 ? $0 : nil } ?? RandomToken.make()
            page.setsFormCookie = existing != page.formToken
        }
        return page
    }

    private func texts(_ request: Request) -> Texts {
        localization.texts(
            Language.negotiate(
                cookie: request.cookies[Language.cookieName]?.value, acceptLanguage: request.headers[.acceptLanguage]))
    }
}
