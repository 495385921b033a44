import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit
import Synchronization

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
        let token = RandomToken.make(prefix: kind == .personal ? "kh_pat_" : "kh_svc_")
        var record = APIToken(
            id: UUID(), kind: kind, userID: userID, name: name, scopes: scopes, createdAt: Date(), lastUsedAt: nil,
            expiresAt: expiresAt, revokedAt: nil)
        record.workspaceID = workspaceID
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO api_tokens (id, user_id, workspace_id, kind, name, token_hash, scopes, created_at,
                expires_at)
                VALUES (\(bind: record.id), \(bind: userID), \(bind: workspaceID), \(bind: kind.rawValue), \
                \(bind: name), \(bind: TokenMaterial.hash(token)), \(bind: Self.encode(scopes)), \
                \(bind: record.createdAt), \(bind: expiresAt))
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
        let scopes = try row.decode(column: "scopes", as: String.self).split(separator: " ").map {
            TokenScope(rawValue: String($0))
        }
        guard let kind = APIToken.Kind(rawValue: try row.decode(column: "kind", as: String.self)), !scopes.contains(nil)
        else {
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
