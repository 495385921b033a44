import Foundation
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import SQLKit
import Testing

@Suite("Database connections")
struct DatabaseTests {
    @Test("on SQLite a write outside a transaction is refused at once, and readers go on while the writer holds the lock")
    func writesQueue() async throws {
        let handle = try await TestDatabase.sqlite.make()
        defer { Task { await handle.close() } }
        let database = handle.database
        // The read path cannot write: such a write would wait for SQLite's lock on a thread the writer needs.
        let start = ContinuousClock.now
        await #expect(throws: KeyhavenError.self) {
            try await database.withConnection { sql in
                try await sql.raw("INSERT INTO users (id, email, created_at) VALUES (\(bind: UUID()), 'x@example.test', \(bind: Date()))").run()
            }
        }
        #expect(start.duration(to: .now) < .seconds(5), "refused, not queued behind a busy timeout")
        // While the writer is inside its transaction, readers on every pooled connection still answer.
        try await database.transaction { sql in
            try await sql.raw("INSERT INTO users (id, email, created_at) VALUES (\(bind: UUID()), 'w@example.test', \(bind: Date()))").run()
            let counts = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        try await database.withConnection { reader in
                            try await reader.raw("SELECT COUNT(*) AS n FROM users").first()?.decode(column: "n", as: Int.self) ?? -1
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // Readers see the last committed state, not the open transaction.
            #expect(counts == Array(repeating: 0, count: 8))
        }
        let committed = try await database.withConnection { sql in
            try await sql.raw("SELECT COUNT(*) AS n FROM users").first()?.decode(column: "n", as: Int.self)
        }
        #expect(committed == 1)
    }
}
