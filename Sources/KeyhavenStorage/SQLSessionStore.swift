import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

/// Sessions in `sessions`, keyed by the SHA-256 of the cookie token.
public struct SQLSessionStore: SessionStore {
    let database: Database

    /// Creates the store.
    public init(database: Database) {
        self.database = database
    }

    public func create(userID: UUID, lifetime: Duration) async throws -> (token: String, session: Session) {
        let token = RandomToken.make()
        let now = Date()
        let session = Session(
            id: TokenMaterial.hash(token), userID: userID, csrfToken: RandomToken.make(),
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
            try await sql.raw("DELETE FROM sessions WHERE user_id = \(bind: userID) AND expires_at < \(bind: now)")
                .run()
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
