import Foundation
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
        loginPerAccount: Int = 10, loginPerAddress: Int = 30, signupPerAddress: Int = 10,
        window: Duration = .seconds(900),
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

/// A token to create, as validated from a request.
public struct NewToken: Sendable {
    public var name: String
    public var scopes: Set<TokenScope>
    public var expiresAt: Date?

    /// Creates the request for a token.
    public init(name: String, scopes: Set<TokenScope>, expiresAt: Date?) {
        self.name = name
        self.scopes = scopes
        self.expiresAt = expiresAt
    }
}

/// The account rules of SPEC §5 in one place — email shape, password policy, hashing, login and sign-up limits,
/// sessions — called by the JSON API, the web pages and `keyhaven users create` alike.
public struct Accounts: Sendable {
    let users: any UserStore
    let sessions: any SessionStore
    let tokens: any TokenStore
    let audit: any AuditLog
    let limiter: any RateLimiter
    let limits: AuthRateLimits
    let hasher: PasswordHasher
    /// Whether anyone may sign up (an operator can always create users).
    public let allowSignup: Bool
    /// How long a session lasts.
    public let sessionLifetime: Duration

    /// A started session: the user, the cookie token (shown once) and the session with its CSRF token.
    public struct SignedIn: Sendable {
        public let user: User
        public let token: String
        public let session: Session
    }

    /// Creates the service.
    public init(
        users: any UserStore, sessions: any SessionStore, tokens: any TokenStore, audit: any AuditLog,
        limiter: any RateLimiter, limits: AuthRateLimits, hasher: PasswordHasher, allowSignup: Bool,
        sessionLifetime: Duration
    ) {
        self.users = users
        self.sessions = sessions
        self.tokens = tokens
        self.audit = audit
        self.limiter = limiter
        self.limits = limits
        self.hasher = hasher
        self.allowSignup = allowSignup
        self.sessionLifetime = sessionLifetime
    }

    /// The problems with a new account's email and password, by field; empty when both are acceptable.
    public static func problems(email: String?, password: String?) -> [String: String] {
        var problems: [String: String] = [:]
        if let email, !isEmail(email) { problems["email"] = "must be an email address" }
        if let password, let problem = PasswordPolicy.problem(with: password) { problems["password"] = problem }
        return problems
    }

    /// Signs up from a client: counts the attempt against the address's limit (valid or not), then validates,
    /// creates the user and starts a session. `errors` are problems the caller already found in the request.
    ///
    /// - Throws: `forbidden` when sign-up is closed, `rateLimited`, `validationFailed` (also for a missing email or
    ///   password), `conflict` when the email is taken.
    public func signUp(
        email: String?, password: String?, errors: [String: String] = [:], actor: AuditActor
    ) async throws -> SignedIn {
        guard allowSignup else { throw KeyhavenError.forbidden("Sign-up is closed on this server.") }
        let email = email?.lowercased()
        var problems = errors.merging(Self.problems(email: email, password: password)) { first, _ in first }
        if email == nil, problems["email"] == nil { problems["email"] = "is required" }
        if password == nil, problems["password"] == nil { problems["password"] = "is required" }
        try await throttle([("signup:address:\(Self.limitKey(actor.ip))", limits.signupPerAddress, limits.window)])
        guard problems.isEmpty, let email, let password else { throw KeyhavenError.validationFailed(problems) }
        let user = try await users.create(
            email: email, passwordHash: try await hasher.hash(password),
            audit: AuditEntry(actor: actor, action: .signup))
        return try await startSession(for: user)
    }

    /// Creates a user for the operator, whether or not sign-up is open; no session is started.
    ///
    /// - Throws: `validationFailed` or `conflict`.
    public func createUser(email: String, password: String, actor: AuditActor) async throws -> User {
        let email = email.lowercased()
        let problems = Self.problems(email: email, password: password)
        guard problems.isEmpty else { throw KeyhavenError.validationFailed(problems) }
        return try await users.create(
            email: email, passwordHash: try await hasher.hash(password),
            audit: AuditEntry(actor: actor, action: .signup))
    }

    /// Logs in: counts the attempt under the address, the account at that address and the account anywhere,
    /// checks the password (in the same time whether or not the account exists), audits the outcome and starts a
    /// session.
    ///
    /// - Throws: `rateLimited`, `invalidLogin` (the same for an unknown email and a wrong password).
    public func logIn(email: String, password: String, actor: AuditActor) async throws -> SignedIn {
        let email = email.lowercased()
        let address = Self.limitKey(actor.ip)
        let accountAtAddress = "login:account:\(email)|address:\(address)"
        try await throttle([
            ("login:address:\(address)", limits.loginPerAddress, limits.window),
            (accountAtAddress, limits.loginPerAccount, limits.window),
            ("login:account:\(email)", limits.loginPerAccountGlobally, limits.accountWindow),
        ])
        let found = try await users.find(email: email)
        let verdict = try await hasher.verify(password, against: found?.passwordHash)
        var actor = actor
        guard case .valid(let rehash) = verdict, let user = found?.0 else {
            if let user = found?.0 { actor.id = user.id.lowercasedText }
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .login, outcome: .failure, ownerID: found?.0.id,
                    detail: ["reason": .string("invalid_credentials")]))
            throw KeyhavenError.invalidLogin
        }
        actor.id = user.id.lowercasedText
        if rehash { try await users.setPasswordHash(try await hasher.hash(password), userID: user.id) }
        try await audit.append(AuditEntry(actor: actor, action: .login, ownerID: user.id))
        try await limiter.reset(accountAtAddress)
        return try await startSession(for: user)
    }

    /// Ends the caller's browser session and audits it.
    ///
    /// - Throws: `forbidden` for a caller signed in otherwise (a token is revoked, not logged out), `unavailable`.
    public func logOut(_ caller: UserCaller) async throws {
        guard case .session(let session) = caller.credential else {
            throw KeyhavenError.forbidden("Only a browser session can log out; revoke tokens instead.")
        }
        try await sessions.delete(id: session.id)
        try await audit.append(AuditEntry(actor: caller.actor, action: .logout, ownerID: caller.user.id))
    }

    /// The caller's tokens (only from a browser session or an external JWT: a token that could mint tokens would
    /// outlive its own scopes).
    ///
    /// - Throws: `forbidden` for a personal access token, `unavailable`.
    public func tokens(of caller: UserCaller) async throws -> [APIToken] {
        try caller.requireInteractive()
        return try await tokens.list(userID: caller.user.id)
    }

    /// Creates a personal access token for the caller; its secret is shown once.
    ///
    /// - Throws: `forbidden` for a personal access token, what `token` throws, `unavailable`.
    public func createPersonalToken(
        by caller: UserCaller, _ token: () async throws -> NewToken
    ) async throws -> (token: String, record: APIToken) {
        try caller.requireInteractive()
        let new = try await token()
        return try await tokens.create(
            kind: .personal, userID: caller.user.id, workspaceID: nil, name: new.name, scopes: new.scopes,
            expiresAt: new.expiresAt,
            audit: AuditEntry(actor: caller.actor, action: .tokenCreate, ownerID: caller.user.id))
    }

    /// Revokes one of the caller's personal access tokens.
    ///
    /// - Throws: `forbidden` for a personal access token, `notFound`.
    public func revokePersonalToken(_ id: @autoclosure () throws -> UUID, by caller: UserCaller) async throws {
        try caller.requireInteractive()
        try await tokens.revoke(
            id: try id(), userID: caller.user.id,
            audit: AuditEntry(actor: caller.actor, action: .tokenRevoke, ownerID: caller.user.id))
    }

    private func startSession(for user: User) async throws -> SignedIn {
        let (token, session) = try await sessions.create(userID: user.id, lifetime: sessionLifetime)
        return SignedIn(user: user, token: token, session: session)
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
        return parts.count == 2 && !parts[0].isEmpty && parts[1].contains(".") && text.unicodeScalars.count <= 254
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
        let groups = stride(from: 0, to: 8, by: 2).map {
            String(format: "%x", UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]))
        }
        return groups.joined(separator: ":") + "::/64"
    }
}
