import Foundation
import Hummingbird
import KeyhavenCore

#if canImport(Glibc)
import Glibc
#endif

/// Limits for login and sign-up attempts (SPEC §5); counted in the database, so they hold across instances.
///
/// Failures against one account are counted per client address, so a stranger exhausting them locks out only
/// their own address, not the account's owner; a slower limit per account, whatever the address, stops a
/// guessing campaign spread over many addresses. IPv6 clients are counted by their /64.
public struct AuthRateLimits: Sendable {
    /// Failed logins for one account from one address, per `window`.
    public var loginPerAccount: Int
    /// Logins from one address, per `window`.
    public var loginPerAddress: Int
    /// Sign-ups from one address, per `window`.
    public var signupPerAddress: Int
    public var window: Duration
    /// Logins for one account from any address, per `accountWindow`.
    public var loginPerAccountGlobally: Int
    public var accountWindow: Duration

    /// Creates limits; the defaults allow 10 failed logins per account and address, 30 logins per address and 10
    /// sign-ups per address every 15 minutes, and 100 logins per account every hour.
    public init(
        loginPerAccount: Int = 10, loginPerAddress: Int = 30, signupPerAddress: Int = 10, window: Duration = .seconds(900),
        loginPerAccountGlobally: Int = 100, accountWindow: Duration = .seconds(3600)
    ) {
        self.loginPerAccount = loginPerAccount
        self.loginPerAddress = loginPerAddress
        self.signupPerAddress = signupPerAddress
        self.window = window
        self.loginPerAccountGlobally = loginPerAccountGlobally
        self.accountWindow = accountWindow
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
    let hasher: PasswordHasher

    /// Creates the controller.
    public init(
        users: any UserStore, sessions: any SessionStore, audit: any AuditLog, limiter: any RateLimiter,
        limits: AuthRateLimits, allowSignup: Bool, cookie: SessionCookie, hasher: PasswordHasher
    ) {
        self.users = users
        self.sessions = sessions
        self.audit = audit
        self.limiter = limiter
        self.limits = limits
        self.allowSignup = allowSignup
        self.cookie = cookie
        self.hasher = hasher
    }

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
        try await throttle([("signup:address:\(Self.limitKey(context.clientAddress))", limits.signupPerAddress, limits.window)])
        try body.validate()
        guard let email, let password else { throw body.errors.error }
        let hash = try await hasher.hash(password)
        let actor = AuditActor(kind: .user, id: nil, ip: context.clientAddress, userAgent: request.headers[.userAgent])
        let user = try await users.create(email: email, passwordHash: hash, audit: AuditEntry(actor: actor, action: .signup))
        return try await startSession(for: user, status: .created)
    }

    @Sendable func login(_ request: Request, context: AppRequestContext) async throws -> Response {
        var body = try await JSONBody.read(request, context: context)
        let email = body.string("email", required: true, maximumLength: 254)?.lowercased()
        let password = body.rawString("password")
        if let password, password.isEmpty || password.utf8.contains(0) {
            body.errors["password"] = "must be a non-empty string without NUL characters"
        }
        try body.validate()
        guard let email, let password else { throw body.errors.error }
        let address = Self.limitKey(context.clientAddress)
        let accountAtAddress = "login:account:\(email)|address:\(address)"
        try await throttle([
            ("login:address:\(address)", limits.loginPerAddress, limits.window),
            (accountAtAddress, limits.loginPerAccount, limits.window),
            ("login:account:\(email)", limits.loginPerAccountGlobally, limits.accountWindow),
        ])
        let found = try await users.find(email: email)
        let verdict = try await hasher.verify(password, against: found?.passwordHash)
        var actor = AuditActor(kind: .user, id: nil, ip: context.clientAddress, userAgent: request.headers[.userAgent])
        guard case .valid(let rehash) = verdict, let user = found?.0 else {
            if let user = found?.0 { actor.id = user.id.uuidString.lowercased() }
            try await audit.append(
                AuditEntry(actor: actor, action: .login, outcome: .failure, ownerID: found?.0.id,
                           detail: ["reason": .string("invalid_credentials")]))
            throw KeyhavenError.invalidLogin
        }
        actor.id = user.id.uuidString.lowercased()
        if rehash { try await users.setPasswordHash(try await hasher.hash(password), userID: user.id) }
        try await audit.append(AuditEntry(actor: actor, action: .login, ownerID: user.id))
        try await limiter.reset(accountAtAddress)
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
    private func throttle(_ keys: [(key: String, limit: Int, window: Duration)]) async throws {
        var retryAfter = 0
        for (key, limit, window) in keys {
            if case .limited(let seconds) = try await limiter.hit(key, limit: limit, window: window) {
                retryAfter = max(retryAfter, seconds)
            }
        }
        if retryAfter > 0 { throw KeyhavenError.rateLimited(retryAfterSeconds: retryAfter) }
    }

    /// An email address: one `@`, a local part, a domain with a dot, no whitespace or control character.
    public static func isEmail(_ text: String) -> Bool {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        return parts.count == 2 && !parts[0].isEmpty && parts[1].contains(".") && text.utf8.count <= 254
            && !text.unicodeScalars.contains { $0.properties.isWhitespace || $0.properties.generalCategory == .control }
    }

    /// The address a limit is counted under: an IPv4 address as it is, an IPv6 address by its /64 (one client
    /// usually holds a whole /64), an IPv4-mapped IPv6 address as IPv4.
    public static func limitKey(_ address: String?) -> String {
        guard let address else { return "unknown" }
        var v6 = in6_addr()
        guard address.contains(":"), inet_pton(AF_INET6, address, &v6) == 1 else { return address }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
            return bytes[12..<16].map(String.init).joined(separator: ".")
        }
        let groups = stride(from: 0, to: 8, by: 2).map { String(format: "%x", UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1])) }
        return groups.joined(separator: ":") + "::/64"
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
