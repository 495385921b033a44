import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

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
                """
                SELECT id, email, external_subject, created_at FROM \
                users WHERE id = \(bind: id) AND disabled_at IS NULL
                """
            ).first().map(Self.user)
        }
    }

    public func findOrCreate(externalSubject: String, email: String?) async throws -> User {
        let query: SQLQueryString = """
            SELECT id, email, external_subject, created_at, disabled_at FROM users
            WHERE external_subject = \(bind: externalSubject)
            """
        @Sendable func enabled(_ row: any SQLRow) throws -> User {
            guard try row.decode(column: "disabled_at", as: Date?.self) == nil else {
                throw KeyhavenError.unauthenticated
            }
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
