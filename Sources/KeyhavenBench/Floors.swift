import Foundation
import KeyhavenDatabase
import SQLKit

// The floors under the HTTP figures: what the database alone allows a route, with Keyhaven's work removed. Each is
// measured from 32 tasks for 2 s through the same `Database` the server uses (its pool, its SQLite writer and group
// commits, its prepared statements), on the database the bench seeded, and printed as `name|operations per second`.

/// Runs the floors on `databaseURL` and prints one line each.
func runFloors(databaseURL: String) async throws {
    let location = try DatabaseLocation(url: databaseURL)
    let database = try await Database.open(location, logger: logger)
    try await database.transaction { sql in
        try await sql.raw("CREATE TABLE IF NOT EXISTS bench_floor (n BIGINT NOT NULL)").run()
    }
    let postgres = if case .postgres = location { true } else { false }

    // A request that reads twice (a token, then a row), as an authenticated GET does.
    let twoReads = try await concurrently {
        for _ in 0..<2 {
            _ = try await database.withConnection(short: true) { sql in try await sql.raw("SELECT 1 AS n").first() }
        }
    }
    print("two reads (SELECT 1, twice)|\(Int(twoReads))")
    // The smallest durable write: one row per transaction, committed (on SQLite, group commits as in the server).
    let durable = try await concurrently {
        try await database.transaction(short: true) { sql in
            try await sql.raw("INSERT INTO bench_floor (n) VALUES (1)").run()
        }
    }
    print("one durable write (INSERT, COMMIT)|\(Int(durable))")
    if postgres {
        // What every audited write holds on PostgreSQL: the chain's lock, from its INSERT until its COMMIT.
        let locked = try await concurrently {
            try await database.transaction(short: true) { sql in
                try await sql.raw(Database.advisoryLock("bench-floor")).run()
                try await sql.raw("INSERT INTO bench_floor (n) VALUES (1)").run()
            }
        }
        print("one serialized durable write (lock, INSERT, COMMIT)|\(Int(locked))")
    }
    try await database.transaction { sql in try await sql.raw("DROP TABLE bench_floor").run() }
    await database.shutdown()
}

/// `body` from 32 tasks for 2 s after a short warm-up; operations per second.
func concurrently(_ body: @escaping @Sendable () async throws -> Void) async throws -> Double {
    for _ in 0..<20 { try await body() }
    let clock = ContinuousClock()
    let start = clock.now
    let count = try await withThrowingTaskGroup(of: Int.self) { group in
        for _ in 0..<32 {
            group.addTask {
                var count = 0
                while start.duration(to: clock.now) < .seconds(2) {
                    try await body()
                    count += 1
                }
                return count
            }
        }
        return try await group.reduce(0, +)
    }
    return Double(count) / start.duration(to: clock.now).seconds
}
