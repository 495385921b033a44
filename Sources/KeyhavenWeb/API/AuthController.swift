import Foundation
import Hummingbird
import HummingbirdBcrypt
import KeyhavenCore
import NIOPosix

/// Limits for login and sign-up attempts (SPEC §5); counted in the database, so they hold across instances.
public struct AuthRateLimits: Sendable {
    public var loginPerAccount: Int
    public var loginPerAddress: Int
    public var signupPerAddress: Int
    public var window: Duration

    /// Creates limits; the defaults allow 10 logins per account and 30 per address, and 10 sign-ups per address,
    /// every 15 minutes.
    public init(loginPerAccount: Int = 10, loginPerAddress: Int = 30, signupPerAddress: Int = 10, window: Duration = .seconds(900)) {
        self.loginPerAccount = loginPerAccount
        self.loginPerAddress = loginPerAddress
        self.signupPerAddress = signupPerAddress
        self.window = window
    }
}

/// Sign-up, login, logout and the current session (SPEC §5).
public struct AuthController: Sendable {
    let users: any UserStore
    let sessions: any SessionStore
    let audit: any AuditLog
    let limiter: any RateLimiter
    let limits: AuthRateLimits
    let allowSignup: Bool
    let cookie: SessionCookie
    let bcryptCost: UInt8

    /// Creates the controller.
    public init(
        users: any UserStore, sessions: any SessionStore, audit: any AuditLog, limiter: any RateLimiter,
        limits: AuthRateLimits, allowSignup: Bool, cookie: SessionCookie, bcryptCost: UInt8 = 12
    ) {
        self.users = users
        self.sessions = sessions
        self.audit = audit
        self.limiter = limiter
        self.limits = limits
        self.allowSignup = allowSignup
        self.cookie = cookie
        self.bcryptCost = max(12, bcryptCost)
    }

    /// A bcrypt hash of nothing anyone knows, verified when the email is unknown so both paths take as long.
    static let decoyHash = Bcrypt.hash("keyhaven decoy \(UUID())", cost: 12)

    /// Adds the routes to the `/api/auth` group.
    public func addRoutes(to group: RouterGroup<AppRequestContext>, userGroup: RouterGroup<UserContext>) {
        group.post("signup", use: signup)
        group.post("login", use: login)
        userGroup.post("logout", use: logout)
        userGroup.get("me", use: me)
    }

    @Sendable func signup(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard allowSignup else { throw KeyhavenError.forbidden("Sign-up is closed on this server.") }
        var body = try await JSONBody.read(request, context: context)
        body.rejectUnknown(["email", "password"])
        let email = body.string("email", required: true, maximumLength: 254)?.lowercased()
        let password = body.rawString("password")
        if let email, !Self.isEmail(email) { body.errors["email"] = "must be an email address" }
        if let password, let problem = PasswordPolicy.problem(with: password) { body.errors["password"] = problem }
        try await throttle(["signup:address:\(context.clientAddress ?? "unknown")": limits.signupPerAddress])
        try body.validate()
        let hash = try await Self.offloop { Bcrypt.hash(password!, cost: bcryptCost) }
        let actor = AuditActor(kind: .user, id: nil, ip: context.clientAddress, userAgent: request.headers[.userAgent])
        let user = try await users.create(email: email!, passwordHash: hash, audit: AuditEntry(actor: actor, action: .signup))
        return try await startSession(for: user, status: .created)
    }

    @Sendable func login(_ request: Request, context: AppRequestContext) async throws -> Response {
        var body = try await JSONBody.read(request, context: context)
        let email = body.string("email", required: true, maximumLength: 254)?.lowercased()
        let password = body.rawString("password")
        try body.validate()
        try await throttle([
            "login:address:\(context.clientAddress ?? "unknown")": limits.loginPerAddress,
            "login:account:\(email!)": limits.loginPerAccount,
        ])
        let found = try await users.find(email: email!)
        let hash = found?.passwordHash ?? Self.decoyHash
        let valid = try await Self.offloop { Bcrypt.verify(password!, hash: hash) }
        var actor = AuditActor(kind: .user, id: nil, ip: context.clientAddress, userAgent: request.headers[.userAgent])
        guard valid, let user = found?.0, found?.passwordHash != nil else {
            if let user = found?.0 { actor.id = user.id.uuidString.lowercased() }
            try await audit.append(
                AuditEntry(actor: actor, action: .login, outcome: .failure, ownerID: found?.0.id,
                           detail: ["reason": .string("invalid_credentials")]))
            throw KeyhavenError.invalidLogin
        }
        actor.id = user.id.uuidString.lowercased()
        try await audit.append(AuditEntry(actor: actor, action: .login, ownerID: user.id))
        try await limiter.reset("login:account:\(email!)")
        return try await startSession(for: user, status: .ok)
    }

    @Sendable func logout(_ request: Request, context: UserContext) async throws -> Response {
        guard case .session(let session) = context.credential else {
            throw KeyhavenError.badRequest("Only a browser session can log out; revoke tokens instead.")
        }
        try await sessions.delete(id: session.id)
        try await audit.append(AuditEntry(actor: context.actor(request), action: .logout, ownerID: context.user.id))
        var response = Response(status: .noContent)
        response.setCookie(cookie.expired())
        return response
    }

    @Sendable func me(_ request: Request, context: UserContext) async throws -> Response {
        var csrf = JSONValue.null
        if case .session(let session) = context.credential { csrf = .string(session.csrfToken) }
        return Response.json(status: .ok, JSONValue.object(["user": context.user.dto(), "csrf_token": csrf]))
    }

    private func startSession(for user: User, status: HTTPResponse.Status) async throws -> Response {
        let (token, session) = try await sessions.create(userID: user.id, lifetime: cookie.lifetime)
        var response = Response.json(
            status: status, JSONValue.object(["user": user.dto(), "csrf_token": .string(session.csrfToken)]))
        response.setCookie(cookie.cookie(token))
        return response
    }

    /// Counts one attempt under every key; the first exceeded limit answers 429 with the same message for all.
    private func throttle(_ keys: [String: Int]) async throws {
        var retryAfter = 0
        for (key, limit) in keys.sorted(by: { $0.key < $1.key }) {
            if case .limited(let seconds) = try await limiter.hit(key, limit: limit, window: limits.window) {
                retryAfter = max(retryAfter, seconds)
            }
        }
        if retryAfter > 0 { throw KeyhavenError.rateLimited(retryAfterSeconds: retryAfter) }
    }

    public static func isEmail(_ text: String) -> Bool {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        return parts.count == 2 && !parts[0].isEmpty && parts[1].contains(".") && !text.contains(where: \.isWhitespace)
    }

    /// bcrypt takes a quarter of a second: run it on the blocking-work pool, never on an event loop.
    public static func offloop<T: Sendable>(_ work: @escaping @Sendable () -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(work)
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
