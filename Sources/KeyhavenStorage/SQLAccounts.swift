import Crypto
import Foundation
import KeyhavenCore
import SQLKit
import Synchronization

/// Random tokens and their stored hashes.
enum TokenMaterial {
    /// `prefix` + 43 characters of base64url (256 random bits).
    static func random(prefix: String = "") -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return prefix
            + Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// SHA-256 of the token, hex: what the database stores and looks up.
    static func hash(_ token: String) -> String {
        Hex.encode(SHA256.hash(data: Data(token.utf8)))
    }
}

/// Users in `users`.
public struct SQLUserStore: UserStore {
    let database: Database
    let audit: SQLAuditLog

    /// Creates the store; events are appended to `audit`.
    public init(database: Database, audit: SQLAuditLog) {
        self.database = database
        self.audit = audit
    }

    public func create(email: String, passwordHash: String, audit entry: AuditEntry?) async throws -> User {
        let user = User(id: UUID(), email: email, externalSubject: nil, createdAt: Date())
        return try await database.transaction { sql in
            let taken = try await sql.raw("SELECT id FROM users WHERE lower(email) = lower(\(bind: email))").first()
            guard taken == nil else { throw KeyhavenError.conflict("An account with this email already exists.") }
            try await sql.raw(
                """
                INSERT INTO users (id, email, password_hash, created_at)
                VALUES (\(bind: user.id), \(bind: email), \(bind: passwordHash), \(bind: user.createdAt))
                """
            ).run()
            if var entry {
                entry.ownerID = user.id
                entry.actor.id = user.id.lowercasedText
                try await audit.append(entry, on: sql)
            }
            return user
        }
    }

    public func find(email: String) async throws -> (User, passwordHash: String?)? {
        try await database.withConnection { sql in
            guard
                let row = try await sql.raw(
                    """
                    SELECT id, email, external_subject, password_hash, created_at FROM users
                    WHERE lower(email) = lower(\(bind: email)) AND disabled_at IS NULL
                    """
                ).first()
            else { return nil }
            return (try Self.user(row), try row.decode(column: "password_hash", as: String?.self))
        }
    }

    public func setPasswordHash(_ hash: String, userID: UUID) async throws {
        try await database.transaction { sql in
            try await sql.raw("UPDATE users SET password_hash = \(bind: hash) WHERE id = \(bind: userID)").run()
        }
    }

    public func find(id: UUID) async throws -> User? {
        try await database.withConnection { sql in
            try await sql.raw(
                "SELECT id, email, external_subject, created_at FROM users WHERE id = \(bind: id) AND disabled_at IS NULL"
            ).first().map(Self.user)
        }
    }

    public func findOrCreate(externalSubject: String, email: String?) async throws -> User {
        let query: SQLQueryString = """
            SELECT id, email, external_subject, created_at, disabled_at FROM users
            WHERE external_subject = \(bind: externalSubject)
            """
        @Sendable func enabled(_ row: any SQLRow) throws -> User {
            guard try row.decode(column: "disabled_at", as: Date?.self) == nil else { throw KeyhavenError.unauthenticated }
            return try Self.user(row)
        }
        if let existing = try await database.withConnection({ sql in try await sql.raw(query).first().map(enabled) }) {
            return existing
        }
        return try await database.transaction { sql in
            if let raced = try await sql.raw(query).first() { return try enabled(raced) }
            let user = User(id: UUID(), email: nil, externalSubject: externalSubject, createdAt: Date())
            try await sql.raw(
                """
                INSERT INTO users (id, external_subject, created_at)
                VALUES (\(bind: user.id), \(bind: externalSubject), \(bind: user.createdAt))
                """
            ).run()
            return user
        }
    }

    static func user(_ row: any SQLRow) throws -> User {
        User(
            id: try row.decode(column: "id", as: UUID.self), email: try row.decode(column: "email", as: String?.self),
            externalSubject: try row.decode(column: "external_subject", as: String?.self),
            createdAt: try row.decode(column: "created_at", as: Date.self))
    }
}

/// Sessions in `sessions`, keyed by the SHA-256 of the cookie token.
public struct SQLSessionStore: SessionStore {
    let database: Database

    /// Creates the store.
    public init(database: Database) {
        self.database = database
    }

    public func create(userID: UUID, lifetime: Duration) async throws -> (token: String, session: Session) {
        let token = TokenMaterial.random()
        let now = Date()
        let session = Session(
            id: TokenMaterial.hash(token), userID: userID, csrfToken: TokenMaterial.random(),
            expiresAt: now.addingTimeInterval(Double(lifetime.components.seconds)))
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO sessions (id, user_id, csrf_token, created_at, expires_at, last_seen_at)
                VALUES (\(bind: session.id), \(bind: userID), \(bind: session.csrfToken), \(bind: now), \
                \(bind: session.expiresAt), \(bind: now))
                """
            ).run()
            // Expired sessions of this user are swept whenever they sign in again.
            try await sql.raw("DELETE FROM sessions WHERE user_id = \(bind: userID) AND expires_at < \(bind: now)").run()
        }
        return (token, session)
    }

    public func find(token: String) async throws -> (Session, User)? {
        try await database.withConnection(short: true) { sql in
            try await sql.raw(
                """
                SELECT s.id AS session_id, s.csrf_token, s.expires_at, u.id, u.email, u.external_subject, u.created_at
                FROM sessions s JOIN users u ON u.id = s.user_id
                WHERE s.id = \(bind: TokenMaterial.hash(token)) AND s.expires_at > \(bind: Date())
                AND u.disabled_at IS NULL
                """
            ).first().map { row in
                let user = try SQLUserStore.user(row)
                let session = Session(
                    id: try row.decode(column: "session_id", as: String.self), userID: user.id,
                    csrfToken: try row.decode(column: "csrf_token", as: String.self),
                    expiresAt: try row.decode(column: "expires_at", as: Date.self))
                return (session, user)
            }
        }
    }

    public func delete(id: String) async throws {
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM sessions WHERE id = \(bind: id)").run()
        }
    }
}

/// API tokens in `api_tokens`, keyed by the SHA-256 of the token.
public struct SQLTokenStore: TokenStore {
    let database: Database
    let audit: SQLAuditLog
    private let uses = RecentUses()

    /// Creates the store; events are appended to `audit`.
    public init(database: Database, audit: SQLAuditLog) {
        self.database = database
        self.audit = audit
    }

    public func create(
        kind: APIToken.Kind, userID: UUID?, workspaceID: UUID?, name: String, scopes: Set<TokenScope>, expiresAt: Date?,
        audit entry: AuditEntry
    ) async throws -> (token: String, record: APIToken) {
        let token = TokenMaterial.random(prefix: kind == .personal ? "kh_pat_" : "kh_svc_")
        var record = APIToken(
            id: UUID(), kind: kind, userID: userID, name: name, scopes: scopes, createdAt: Date(), lastUsedAt: nil,
            expiresAt: expiresAt, revokedAt: nil)
        record.workspaceID = workspaceID
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO api_tokens (id, user_id, workspace_id, kind, name, token_hash, scopes, created_at, expires_at)
                VALUES (\(bind: record.id), \(bind: userID), \(bind: workspaceID), \(bind: kind.rawValue), \(bind: name), \
                \(bind: TokenMaterial.hash(token)), \(bind: Self.encode(scopes)), \(bind: record.createdAt), \
                \(bind: expiresAt))
                """
            ).run()
            var entry = entry
            entry.detail["token_id"] = .string(record.id.lowercasedText)
            entry.detail["kind"] = .string(kind.rawValue)
            if let workspaceID { entry.detail["workspace_id"] = .string(workspaceID.lowercasedText) }
            entry.detail["scopes"] = .array(scopes.map(\.rawValue).sorted().map(JSONValue.string))
            try await audit.append(entry, on: sql)
        }
        return (token, record)
    }

    public func authenticate(token: String) async throws -> (record: APIToken, user: User?)? {
        let now = Date()
        // One query for the token and its user: every request with a token runs it.
        let found = try await database.withConnection(short: true) { sql in
            try await sql.raw(
                """
                SELECT t.*, u.email AS user_email, u.external_subject AS user_external_subject,
                u.created_at AS user_created_at
                FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id
                WHERE t.token_hash = \(bind: TokenMaterial.hash(token)) AND t.revoked_at IS NULL
                AND (t.expires_at IS NULL OR t.expires_at > \(bind: now))
                AND (t.user_id IS NULL OR u.disabled_at IS NULL)
                """
            ).first().map { row -> (APIToken, User?) in
                let record = try Self.token(row)
                let user = try record.userID.map { id in
                    User(
                        id: id, email: try row.decode(column: "user_email", as: String?.self),
                        externalSubject: try row.decode(column: "user_external_subject", as: String?.self),
                        createdAt: try row.decode(column: "user_created_at", as: Date.self))
                }
                return (record, user)
            }
        }
        guard let (record, user) = found else { return nil }
        // Recording every use would write on every request; once a minute is enough to show activity, and only one
        // of the requests arriving together with a token writes it. It is bookkeeping, not part of the answer: it
        // is written in the background, through the write queue like every write, so no request waits for the
        // writer to authenticate.
        if record.lastUsedAt.map({ now.timeIntervalSince($0) > 60 }) ?? true, uses.claim(record.id, at: now) {
            let database = database
            Task {
                try? await database.transaction { sql in
                    try await sql.raw(
                        "UPDATE api_tokens SET last_used_at = \(bind: now) WHERE id = \(bind: record.id)"
                    ).run()
                }
            }
        }
        return (record, user)
    }

    public func list(userID: UUID) async throws -> [APIToken] {
        try await database.withConnection { sql in
            try await sql.raw(
                """
                SELECT * FROM api_tokens WHERE user_id = \(bind: userID) AND kind = 'personal'
                ORDER BY created_at DESC, id DESC
                """
            ).all().map(Self.token)
        }
    }

    public func revoke(id: UUID, userID: UUID?, audit entry: AuditEntry) async throws {
        try await revoke(id, kind: userID == nil ? nil : .personal, owner: userID.map { ("user_id", $0) }, audit: entry)
    }

    public func revokeServiceToken(id: UUID, workspaceID: UUID, audit entry: AuditEntry) async throws {
        try await revoke(id, kind: .service, owner: ("workspace_id", workspaceID), audit: entry)
    }

    /// Revokes a live token of `kind` whose `owner.column` is `owner.id` (any, when nil), audited.
    private func revoke(
        _ id: UUID, kind: APIToken.Kind?, owner: (column: String, id: UUID)?, audit entry: AuditEntry
    ) async throws {
        try await database.transaction { sql in
            var query = SQLQueryString(
                "UPDATE api_tokens SET revoked_at = \(bind: Date()) WHERE id = \(bind: id) AND revoked_at IS NULL")
            if let kind {
                query.appendInterpolation(unsafeRaw: " AND kind = ")
                query.appendInterpolation(bind: kind.rawValue)
            }
            if let owner {
                query.appendInterpolation(unsafeRaw: " AND ")
                query.appendInterpolation(ident: owner.column)
                query.appendInterpolation(unsafeRaw: " = ")
                query.appendInterpolation(bind: owner.id)
            }
            query.appendInterpolation(unsafeRaw: " RETURNING id")
            guard try await sql.raw(query).first() != nil else { throw KeyhavenError.notFound }
            var entry = entry
            entry.detail["token_id"] = .string(id.lowercasedText)
            try await audit.append(entry, on: sql)
        }
    }

    public func serviceTokens(workspaceID: UUID) async throws -> [APIToken] {
        try await database.withConnection { sql in
            try await sql.raw(
                """
                SELECT * FROM api_tokens WHERE workspace_id = \(bind: workspaceID) AND kind = 'service'
                ORDER BY created_at DESC, id DESC
                """
            ).all().map(Self.token)
        }
    }

    static func encode(_ scopes: Set<TokenScope>) -> String {
        scopes.map(\.rawValue).sorted().joined(separator: " ")
    }

    /// A row as a token. An unknown kind or scope is an error, never a default.
    ///
    /// - Throws: `KeyhavenError.internalError` for a row that does not decode.
    static func token(_ row: any SQLRow) throws -> APIToken {
        let scopes = try row.decode(column: "scopes", as: String.self).split(separator: " ").map { TokenScope(rawValue: String($0)) }
        guard let kind = APIToken.Kind(rawValue: try row.decode(column: "kind", as: String.self)), !scopes.contains(nil) else {
            throw KeyhavenError.internalError
        }
        var token = APIToken(
            id: try row.decode(column: "id", as: UUID.self),
            kind: kind,
            userID: try row.decode(column: "user_id", as: UUID?.self),
            name: try row.decode(column: "name", as: String.self),
            scopes: Set(scopes.compactMap { $0 }),
            createdAt: try row.decode(column: "created_at", as: Date.self),
            lastUsedAt: try row.decode(column: "last_used_at", as: Date?.self),
            expiresAt: try row.decode(column: "expires_at", as: Date?.self),
            revokedAt: try row.decode(column: "revoked_at", as: Date?.self))
        token.workspaceID = try row.decode(column: "workspace_id", as: UUID?.self)
        return token
    }
}

/// Fixed-window counters in `rate_limits`, shared by every instance. Keys are stored hashed, so an email used as
/// part of a key is not kept in clear.
public struct SQLRateLimiter: RateLimiter {
    let database: Database

    /// Creates the limiter.
    public init(database: Database) {
        self.database = database
    }

    public func hit(_ key: String, limit: Int, window: Duration) async throws -> RateDecision {
        // A window opens at the first attempt and lasts `window`; the next attempt after it opens a new one.
        let now = Int64(Date().timeIntervalSince1970)
        let expired = now - window.components.seconds
        // A write: on SQLite it queues for the write lock instead of busy-waiting on a shared thread.
        let row = try await database.transaction(short: true) { sql in
            try await sql.raw(
                """
                INSERT INTO rate_limits (key, window_start, count)
                VALUES (\(bind: TokenMaterial.hash(key)), \(bind: now), 1)
                ON CONFLICT (key) DO UPDATE SET
                count = CASE WHEN rate_limits.window_start <= \(bind: expired) THEN 1 ELSE rate_limits.count + 1 END,
                window_start = CASE WHEN rate_limits.window_start <= \(bind: expired) THEN \(bind: now)
                ELSE rate_limits.window_start END
                RETURNING count, window_start
                """
            ).first()
        }
        let count = try row?.decode(column: "count", as: Int.self) ?? 1
        let started = try row?.decode(column: "window_start", as: Int64.self) ?? now
        return count > limit ? .limited(retryAfterSeconds: max(1, Int(started + window.components.seconds - now))) : .allowed
    }

    public func reset(_ key: String) async throws {
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM rate_limits WHERE key = \(bind: TokenMaterial.hash(key))").run()
        }
    }
}

/// Which tokens this process recorded a use of in the last minute, so concurrent first uses write once.
final class RecentUses: Sendable {
    private let recorded = Mutex<[UUID: Date]>([:])

    /// Whether the caller should record a use of `id` now (no one in this process did in the last minute).
    func claim(_ id: UUID, at now: Date) -> Bool {
        recorded.withLock { recorded in
            if let last = recorded[id], now.timeIntervalSince(last) < 60 { return false }
            if recorded.count > 10_000 { recorded.removeAll() }
            recorded[id] = now
            return true
        }
    }
}
