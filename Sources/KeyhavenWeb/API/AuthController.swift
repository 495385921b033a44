import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices

/// Sign-up, login, logout and the current session (SPEC §5), over the account rules of ``Accounts``.
public struct AuthController: Sendable {
    let accounts: Accounts
    let cookie: SessionCookie

    /// Creates the controller.
    public init(accounts: Accounts, cookie: SessionCookie) {
        self.accounts = accounts
        self.cookie = cookie
    }

    /// Adds the routes to the `/api/auth` group.
    public func addRoutes(to group: RouterGroup<AppRequestContext>, userGroup: RouterGroup<UserContext>) {
        group.post("signup", use: signup)
        group.post("login", use: login)
        userGroup.post("logout", use: logout)
        userGroup.get("me", use: me)
    }

    @Sendable func signup(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard accounts.allowSignup else { throw KeyhavenError.forbidden("Sign-up is closed on this server.") }
        let decoded = try await SignupRequest.read(request, context: context)
        let parsed = decoded.body.parsed(decoded.errors)
        let signedIn = try await accounts.signUp(
            email: parsed.email, password: parsed.password, errors: parsed.problems,
            actor: context.anonymousActor(request))
        return startSession(signedIn, status: .created)
    }

    @Sendable func login(_ request: Request, context: AppRequestContext) async throws -> Response {
        let decoded = try await LoginRequest.read(request, context: context)
        let login = try decoded.body.validated(decoded.errors).orThrow()
        let signedIn = try await accounts.logIn(
            email: login.email, password: login.password, actor: context.anonymousActor(request))
        return startSession(signedIn, status: .ok)
    }

    @Sendable func logout(_ request: Request, context: UserContext) async throws -> Response {
        try await accounts.logOut(context.caller(request))
        var response = Response(status: .noContent)
        response.setCookie(cookie.expired())
        return response
    }

    @Sendable func me(_ request: Request, context: UserContext) async throws -> Response {
        var csrf: String?
        if case .session(let session) = context.credential { csrf = session.csrfToken }
        return Response.json(status: .ok, SessionResponse(user: context.user, csrfToken: csrf))
    }

    private func startSession(_ signedIn: Accounts.SignedIn, status: HTTPResponse.Status) -> Response {
        var response = Response.json(
            status: status, SessionResponse(user: signedIn.user, csrfToken: signedIn.session.csrfToken))
        response.setCookie(cookie.cookie(signedIn.token))
        return response
    }
}

/// The session cookie of SPEC §5: `keyhaven_session`, `__Host-` prefixed and Secure over HTTPS, HttpOnly,
/// SameSite=Lax; and beside it the signed-out reader's form cookie (`keyhaven_form`), prefixed and Secure the same
/// way, so that a sibling subdomain can set neither. Over plain http (a local `http://127.0.0.1` server) browsers
/// refuse `__Host-` and Secure cookies, so both go without.
public struct SessionCookie: Sendable {
    /// The cookie's name.
    public let name: String
    /// The name of the cookie that holds a signed-out reader's form token (double submit).
    public let formName: String
    package let secure: Bool
    /// How long a session lasts.
    public let lifetime: Duration

    /// Creates the cookie settings for a server reached over HTTPS or not.
    public init(secure: Bool, lifetime: Duration = .seconds(7 * 24 * 3600)) {
        self.name = secure ? "__Host-keyhaven_session" : "keyhaven_session"
        self.formName = secure ? "__Host-keyhaven_form" : "keyhaven_form"
        self.secure = secure
        self.lifetime = lifetime
    }

    package func cookie(_ token: String) -> Cookie {
        Cookie(
            name: name, value: token, maxAge: Int(lifetime.components.seconds), path: "/", secure: secure,
            httpOnly: true, sameSite: .lax)
    }

    package func expired() -> Cookie {
        Cookie(name: name, value: "", maxAge: 0, path: "/", secure: secure, httpOnly: true, sameSite: .lax)
    }

    /// The form cookie holding `token` (an hour), or removing it (`token` nil). Path `/` and no Domain, as the
    /// `__Host-` prefix requires.
    package func formCookie(_ token: String?) -> Cookie {
        Cookie(
            name: formName, value: token ?? "", maxAge: token == nil ? 0 : 3600, path: "/", secure: secure,
            httpOnly: true,
            sameSite: .strict)
    }
}
