import Foundation

/// A person who stores integrations.
public struct User: Sendable, Equatable {
    public var id: UUID
    /// The sign-in email; nil for users known only by an external JWT subject.
    public var email: String?
    /// The `sub` of the external identity provider, for JWT users.
    public var externalSubject: String?
    public var createdAt: Date

    /// Creates a user value.
    public init(id: UUID, email: String?, externalSubject: String?, createdAt: Date) {
        self.id = id
        self.email = email
        self.externalSubject = externalSubject
        self.createdAt = createdAt
    }
}

/// Users and their password hashes.
public protocol UserStore: Sendable {
    /// Creates a user with an email and a bcrypt hash.
    ///
    /// - Throws: `KeyhavenError.conflict` if the email (compared case-insensitively) is taken.
    func create(email: String, passwordHash: String, audit: AuditEntry?) async throws -> User

    /// The user with this email (case-insensitive) and their password hash, if any.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func find(email: String) async throws -> (User, passwordHash: String?)?

    /// Replaces a user's password hash (a stored hash of an older form, upgraded at login).
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func setPasswordHash(_ hash: String, userID: UUID) async throws

    /// The user with this id, if enabled.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func find(id: UUID) async throws -> User?

    /// The enabled user with this external subject, created on first sight.
    ///
    /// - Throws: `KeyhavenError.unauthenticated` if that user is disabled, `.unavailable` if the database cannot
    ///   be reached.
    func findOrCreate(externalSubject: String, email: String?) async throws -> User
}

/// A browser session: the row behind a `keyhaven_session` cookie.
public struct Session: Sendable, Equatable {
    /// SHA-256 of the cookie token, hex.
    public var id: String
    public var userID: UUID
    /// The token every state-changing request of this session must carry.
    public var csrfToken: String
    public var expiresAt: Date

    /// Creates a session value.
    public init(id: String, userID: UUID, csrfToken: String, expiresAt: Date) {
        self.id = id
        self.userID = userID
        self.csrfToken = csrfToken
        self.expiresAt = expiresAt
    }
}

/// Server-side sessions; only hashes of cookie tokens are stored.
public protocol SessionStore: Sendable {
    /// Starts a session; returns the cookie token (shown once) and the session.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func create(userID: UUID, lifetime: Duration) async throws -> (token: String, session: Session)

    /// The live session for a cookie token and its (enabled) user, if any, in one lookup.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func find(token: String) async throws -> (Session, User)?

    /// Ends a session.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func delete(id: String) async throws
}

/// The scopes a token may hold.
public enum TokenScope: String, Sendable, CaseIterable, Codable {
    case integrationsRead = "integrations:read"
    case integrationsWrite = "integrations:write"
    case credentialsRead = "credentials:read"
    /// Send provider requests through the gateway (service tokens).
    case gatewayUse = "gateway:use"
    /// Report usage of calls a backend made to a provider itself (service tokens). A scope of its own: a report
    /// adds to what budgets count, so a token that only forwards or reads cannot write spending.
    case usageReport = "usage:report"

    /// The scopes a service token may hold.
    public static let service: Set<TokenScope> = [.credentialsRead, .gatewayUse, .usageReport]
}

/// A personal access token (`kh_pat_…`) or a service token (`kh_svc_…`); the token itself is never stored.
public struct APIToken: Sendable, Equatable {
    /// Personal tokens act for a user; service tokens act for the application backend.
    public enum Kind: String, Sendable {
        case personal
        case service
    }

    public var id: UUID
    public var kind: Kind
    /// The owner of a personal token; nil for service tokens.
    public var userID: UUID?
    /// The one workspace a scoped service token may read; nil for personal tokens and unscoped service tokens.
    public var workspaceID: UUID?
    public var name: String
    public var scopes: Set<TokenScope>
    public var createdAt: Date
    public var lastUsedAt: Date?
    public var expiresAt: Date?
    public var revokedAt: Date?

    /// Creates a token value.
    public init(
        id: UUID, kind: Kind, userID: UUID?, name: String, scopes: Set<TokenScope>, createdAt: Date,
        lastUsedAt: Date?, expiresAt: Date?, revokedAt: Date?
    ) {
        self.id = id
        self.kind = kind
        self.userID = userID
        self.name = name
        self.scopes = scopes
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
    }
}

/// API tokens, stored as SHA-256 hashes.
public protocol TokenStore: Sendable {
    /// Creates a token; the returned string is shown once and never stored. A service token with a `workspaceID`
    /// reads only that workspace's credentials.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func create(
        kind: APIToken.Kind, userID: UUID?, workspaceID: UUID?, name: String, scopes: Set<TokenScope>, expiresAt: Date?,
        audit: AuditEntry
    ) async throws -> (token: String, record: APIToken)

    /// The live (unrevoked, unexpired) token for a presented string, with its user (nil for a service token),
    /// read together; records its use. A personal token whose user is disabled is not live.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func authenticate(token: String) async throws -> (record: APIToken, user: User?)?

    /// A user's personal tokens, newest first.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func list(userID: UUID) async throws -> [APIToken]

    /// Revokes a token: a user's own personal token, or (with `userID` nil) any token, as the operator.
    ///
    /// - Throws: `KeyhavenError.notFound` if there is no such live token for that user.
    func revoke(id: UUID, userID: UUID?, audit: AuditEntry) async throws

    /// The service tokens scoped to a workspace, newest first, revoked ones included.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func serviceTokens(workspaceID: UUID) async throws -> [APIToken]

    /// Revokes a service token scoped to the workspace.
    ///
    /// - Throws: `KeyhavenError.notFound` if there is no such live token in that workspace.
    func revokeServiceToken(id: UUID, workspaceID: UUID, audit: AuditEntry) async throws
}

extension TokenStore {
    /// Creates a token that is not scoped to a workspace.
    ///
    /// - Throws: as ``create(kind:userID:workspaceID:name:scopes:expiresAt:audit:)``.
    public func create(
        kind: APIToken.Kind, userID: UUID?, name: String, scopes: Set<TokenScope>, expiresAt: Date?, audit: AuditEntry
    ) async throws -> (token: String, record: APIToken) {
        try await create(
            kind: kind, userID: userID, workspaceID: nil, name: name, scopes: scopes, expiresAt: expiresAt, audit: audit
        )
    }
}

/// What a rate limiter decided.
public enum RateDecision: Sendable, Equatable {
    case allowed
    case limited(retryAfterSeconds: Int)
}

/// One attempt to count under `key`, at most `limit` in each `window`, in the transaction of the work it pays for.
public struct RateCount: Sendable, Equatable {
    public var key: String
    public var limit: Int
    public var window: Duration

    /// Creates the count.
    public init(key: String, limit: Int, window: Duration) {
        self.key = key
        self.limit = limit
        self.window = window
    }
}

/// Fixed-window counters shared by every instance (they live in the database).
public protocol RateLimiter: Sendable {
    /// Counts one attempt under `key`; more than `limit` in the window is refused.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func hit(_ key: String, limit: Int, window: Duration) async throws -> RateDecision

    /// Forgets the attempts counted under `key` (after a successful login, so only failures accumulate).
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func reset(_ key: String) async throws

    /// Whether the counters live in the database the stores write to, so that an attempt can be counted inside the
    /// transaction of the work it pays for (``RateCount``) instead of in one of its own.
    var countsInDatabase: Bool { get }
}

extension RateLimiter {
    public var countsInDatabase: Bool { false }
}
