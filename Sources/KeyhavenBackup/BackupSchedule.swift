import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

/// The lease on scheduled backups, in the database: the next backup is due at `due_at`, and the instance that
/// moves `due_at` forward (one UPDATE, so one instance of many) is the one that takes it.
public struct BackupSchedule: Sendable {
    let database: Database

    /// Creates the lease over `database`.
    public init(database: Database) {
        self.database = database
    }

    /// Claims the backup due now, if any: true for the one caller that claimed it, which should take it; the next
    /// one is then due `interval` later.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    public func claim(holder: String, interval: Duration, now: Date = Date()) async throws -> Bool {
        let next = now.addingTimeInterval(Self.seconds(interval))
        return try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO backup_schedule (name, due_at, holder) VALUES ('scheduled', \(bind: now), '')
                ON CONFLICT (name) DO NOTHING
                """
            ).run()
            return try await sql.raw(
                """
                UPDATE backup_schedule SET due_at = \(bind: next), holder = \(bind: holder)
                WHERE name = 'scheduled' AND due_at <= \(bind: now) RETURNING name
                """
            ).first() != nil
        }
    }

    /// After a failed backup, makes the next one due at `retryAt` instead, if `holder` still holds the lease.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    public func retry(holder: String, at retryAt: Date) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                UPDATE backup_schedule SET due_at = \(bind: retryAt)
                WHERE name = 'scheduled' AND holder = \(bind: holder) AND due_at > \(bind: retryAt)
                """
            ).run()
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
