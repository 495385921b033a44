import Foundation
import Hummingbird
import KeyhavenCore

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
        var body = try await JSONBody.read(request, context: context)
        body.rejectUnknown(["email", "password"])
        let email = body.string("email", required: true, maximumLength: 254)
        let password = body.rawString("password")
        let signedIn = try await accounts.signUp(
            email: email, password: password, errors: body.errors.problems, actor: context.anonymousActor(request))
        return startSession(signedIn, status: .created)
    }

    @Sendable func login(_ request: Request, context: AppRequestContext) async throws -> Response {
        var body = try await JSONBody.read(request, context: context)
        let email = body.string("email", required: true, maximumLength: 254)
        let password = body.rawString("password")
        if let password, password.isEmpty || password.utf8.contains(0) {
            body.errors["password"] = "must be a non-empty string without NUL characters"
        }
        try body.validate()
        guard let email, let password else { throw body.errors.error }
        return startSession(try await accounts.logIn(email: email, password: password, actor: context.anonymousActor(request)), status: .ok)
    }

    @Sendable func logout(_ request: Request, context: UserContext) async throws -> Response {
        guard case .session(let session) = context.credential else {
            throw KeyhavenError.badRequest("Only a browser session can log out; revoke tokens instead.")
        }
        try await accounts.logOut(session: session, userID: context.user.id, actor: context.actor(request))
        var response = Response(status: .noContent)
        response.setCookie(cookie.expired())
        return response
    }

    @Sendable func me(_ request: Request, context: UserContext) async throws -> Response {
        var csrf = JSONValue.null
        if case .session(let session) = context.credential { csrf = .string(session.csrfToken) }
        return Response.json(status: .ok, JSONValue.object(["user": context.user.dto(), "csrf_token": csrf]))
    }

    private func startSession(_ signedIn: Accounts.SignedIn, status: HTTPResponse.Status) -> Response {
        var response = Response.json(
            status: status,
            JSONValue.object(["user": signedIn.user.dto(), "csrf_token": .string(signedIn.session.csrfToken)]))
        response.setCookie(cookie.cookie(signedIn.token))
        return response
    }
}

/// The session cookie of SPEC §5: `keyhaven_session`, `__Host-` prefixed and Secure over HTTPS, HttpOnly,
/// SameSite=Lax.
public struct SessionCookie: Sendable {
    /// The cookie's name.
    public let name: String
    let secure: Bool
    /// How long a session lasts.
    public let lifetime: Duration

    /// Creates the cookie settings for a server reached over HTTPS or not.
    public init(secure: Bool, lifetime: Duration = .seconds(7 * 24 * 3600)) {
        self.name = secure ? "__Host-keyhaven_session" : "keyhaven_session"
        self.secure = secure
        self.lifetime = lifetime
    }

    func cookie(_ token: String) -> Cookie {
        Cookie(name: name, value: token, maxAge: Int(lifetime.components.seconds), path: "/", secure: secure,
               httpOnly: true, sameSite: .lax)
    }

    func expired() -> Cookie {
        Cookie(name: name, value: "", maxAge: 0, path: "/", secure: secure, httpOnly: true, sameSite: .lax)
    }
}
