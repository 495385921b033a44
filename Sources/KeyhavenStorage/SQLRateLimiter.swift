import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

/// Fixed-window counters in `rate_limits`, shared by every instance. Keys are stored hashed, so an email used as
/// part of a key is not kept in clear.
public struct SQLRateLimiter: RateLimiter {
    let database: Database

    /// Creates the limiter.
    public init(database: Database) {
        self.database = database
    }

    public var countsInDatabase: Bool { true }

    public func hit(_ key: String, limit: Int, window: Duration) async throws -> RateDecision {
        // A write: on SQLite it queues for the write lock instead of busy-waiting on a shared thread.
        try await database.transaction(short: true) { sql in
            try await Self.hit(key, limit: limit, window: window, on: sql)
        }
    }

    /// Counts `count` in the transaction `sql` is in.
    ///
    /// - Throws: `KeyhavenError.rateLimited` once the budget is spent (the caller's transaction then rolls back).
    static func count(_ count: RateCount, on sql: any SQLDatabase) async throws {
        if case .limited(let seconds) = try await hit(count.key, limit: count.limit, window: count.window, on: sql) {
            throw KeyhavenError.rateLimited(retryAfterSeconds: seconds)
        }
    }

    private static func hit(_ key: String, limit: Int, window: Duration, on sql: any SQLDatabase) async throws
        -> RateDecision
    {
        // A window opens at the first attempt and lasts `window`; the next attempt after it opens a new one.
        let now = Int64(Date().timeIntervalSince1970)
        let expired = now - window.components.seconds
        let row = try await sql.raw(
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
        let count = try row?.decode(column: "count", as: Int.self) ?? 1
        let started = try row?.decode(column: "window_start", as: Int64.self) ?? now
        // The stored start is a row's value: the wait is worked out without trapping, and never past one window.
        let wait = Saturating.subtract(Saturating.add(started, window.components.seconds), now)
        return count > limit
            ? .limited(retryAfterSeconds: Int(min(max(1, wait), max(1, window.components.seconds)))) : .allowed
    }

    public func reset(_ key: String) async throws {
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM rate_limits WHERE key = \(bind: TokenMaterial.hash(key))").run()
        }
    }
}
