import Foundation
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import SQLKit
import Testing

@Suite("Migrations")
struct MigrationTests {
    @Test("migrations apply once, and every table of the data model exists", arguments: TestDatabase.all)
    func idempotent(kind: TestDatabase) async throws {
        let handle = try await kind.make()
        defer { Task { await handle.close() } }
        let migrator = Migrator(database: handle.database)
        #expect(try await migrator.migrate().isEmpty)
        #expect(try await migrator.pending().isEmpty)
        try await handle.database.transaction { sql in
            for table in ["users", "integrations", "secrets", "keyring_keys", "schema_migrations"] {
                _ = try await sql.raw("SELECT COUNT(*) AS n FROM \(ident: table)").first()
            }
        }
    }

    @Test("a database changed by a newer Keyhaven, or whose applied migration differs, is refused", arguments: TestDatabase.all)
    func refusesUnknownSchema(kind: TestDatabase) async throws {
        let handle = try await kind.make()
        defer { Task { await handle.close() } }
        try await handle.database.transaction { sql in
            try await sql.raw("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1").run()
        }
        await #expect(throws: KeyhavenError.self) { try await Migrator(database: handle.database).migrate() }
        try await handle.database.transaction { sql in
            try await sql.raw("DELETE FROM schema_migrations WHERE version = 1").run()
            try await sql.raw("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (999, 'Future', 'x', \(bind: Date()))").run()
        }
        await #expect(throws: KeyhavenError.self) { try await Migrator(database: handle.database).migrate() }
    }

    @Test("database URLs are parsed, and printing one never shows its password")
    func locations() throws {
        #expect(try DatabaseLocation(url: "sqlite://./data/keyhaven.sqlite") == .sqlite(path: "./data/keyhaven.sqlite"))
        #expect(try DatabaseLocation(url: "sqlite:///var/lib/keyhaven.sqlite") == .sqlite(path: "/var/lib/keyhaven.sqlite"))
        let postgres = try DatabaseLocation(url: "postgres://app:hunter2-secret@db.internal:5433/vault")
        #expect("\(postgres)" == "postgres://app@db.internal:5433/vault")
        #expect(!"\(postgres)".contains("hunter2"))
        for bad in ["mysql://x", "", "sqlite://", "/tmp/file.sqlite"] {
            #expect(throws: KeyhavenError.self) { try DatabaseLocation(url: bad) }
        }
    }
}
