import Foundation
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import SQLKit
import Testing

@testable import KeyhavenDatabase

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

    @Test(
        "a database changed by a newer Keyhaven, or whose applied migration differs, is refused",
        arguments: TestDatabase.all)
    func refusesUnknownSchema(kind: TestDatabase) async throws {
        let handle = try await kind.make()
        defer { Task { await handle.close() } }
        try await handle.database.transaction { sql in
            try await sql.raw("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1").run()
        }
        await #expect(throws: KeyhavenError.self) { try await Migrator(database: handle.database).migrate() }
        try await handle.database.transaction { sql in
            try await sql.raw("DELETE FROM schema_migrations WHERE version = 1").run()
            try await sql.raw(
                """
                INSERT INTO schema_migrations (version, name, checksum, \
                applied_at) VALUES (999, 'Future', 'x', \(bind: Date()))
                """
            ).run()
        }
        await #expect(throws: KeyhavenError.self) { try await Migrator(database: handle.database).migrate() }
    }

    @Test("database URLs are parsed, and printing one never shows its password")
    func locations() throws {
        #expect(try DatabaseLocation(url: "sqlite://./data/keyhaven.sqlite") == .sqlite(path: "./data/keyhaven.sqlite"))
        #expect(
            try DatabaseLocation(url: "sqlite:///var/lib/keyhaven.sqlite") == .sqlite(path: "/var/lib/keyhaven.sqlite"))
        let postgres = try DatabaseLocation(url: "postgres://app:hunter2-secret@db.internal:5433/vault")
        #expect("\(postgres)" == "postgres://app@db.internal:5433/vault")
        #expect(!"\(postgres)".contains("hunter2"))
        for bad in ["mysql://x", "", "sqlite://", "/tmp/file.sqlite"] {
            #expect(throws: KeyhavenError.self) { try DatabaseLocation(url: bad) }
        }
    }
}

/// Migration 9 (organizations) on a database that already holds integrations.
@Suite("Workspaces migration")
struct WorkspacesMigrationTests {
    @Test(
        """
        existing integrations stay in their owner's personal workspace and every \
        secret opens as before; an organization can own integrations afterwards
        """,
        arguments: TestDatabase.all)
    func existingIntegrationsStay(kind: TestDatabase) async throws {
        let handle = try await kind.make(migrated: false)
        defer { Task { await handle.close() } }
        var database = handle.database
        let logger = Logger(label: "test")
        try await Migrator(database: database).migrate(through: 8)
        let keyring = try await LiveKeyring.open(
            source: Fixtures.environmentKeyring(), database: database, allowCreate: true, logger: logger)
        /// The stores over `database`.
        func stores(_ database: Database) async throws -> (SQLSecretStore, SQLAuditLog, SQLIntegrationStore) {
            let secrets = SQLSecretStore(database: database, keyring: keyring, logger: logger)
            let audit = SQLAuditLog(
                database: database, keys: try await AuditKeys.open(database: database, keyring: keyring))
            return (
                secrets, audit, SQLIntegrationStore(database: database, secrets: secrets, audit: audit, logger: logger)
            )
        }
        var (secrets, audit, integrations) = try await stores(database)
        let owner = UUID()
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO users (id, email, created_at) VALUES \
                (\(bind: owner), 'before@example.test', \(bind: Date()))
                """
            ).run()
        }
        var created: [(Integration, String)] = []
        for index in 0..<3 {
            let key = "sk-before-migration-\(index)-\(UUID().uuidString)"
            let integration = try await integrations.create(
                ownerID: owner, name: "before \(index)", type: .openai, config: ["organization": "org-keep"],
                credentials: .apiKey(key), actor: .system)
            _ = try await integrations.update(
                id: integration.id, ownerID: owner, changes: IntegrationChanges(credentials: .apiKey(key)),
                actor: .system)
            created.append((integration, key))
        }

        #expect(try await Migrator(database: database).migrate(through: 9) == ["0009_AddOrganizations"])
        try await Migrator(database: database).migrate()
        // A server migrates before it prepares a statement; these stores prepared theirs on schema 8 (on PostgreSQL a
        // `SELECT *` prepared then is refused once a later migration adds a column), so they go on over a pool
        // opened after the migration, as a server started on the database would.
        if kind == .postgres {
            database = try await Database.open(handle.location, searchPath: handle.schema.map { [$0] }, logger: logger)
            (secrets, audit, integrations) = try await stores(database)
        }

        for (before, key) in created {
            let (after, role) = try await integrations.find(id: before.id, for: owner)
            #expect(role == .owner)
            #expect(after.ownerID == owner && after.name == before.name && after.config == before.config)
            #expect(after.credentialVersion == 2)
            for version in [1, 2] {
                let (plaintext, _) = try await secrets.get(
                    SecretOwner(integrationID: before.id, ownerID: owner), version: version)
                #expect(try Credentials(type: .openai, stored: plaintext).wireValue == .string(key))
            }
            let (_, read) = try await integrations.readCredentials(id: before.id, actor: .system) { _ in nil }
            #expect(read.wireValue == .string(key))
        }
        #expect(try await integrations.list(ownerID: owner, limit: 10, after: nil).count == 3)

        // Foreign keys hold again after the migration: a secret of no integration is refused.
        await #expect(throws: (any Error).self) {
            try await database.transaction { sql in
                try await sql.raw(
                    """
                    INSERT INTO secrets (id, integration_id, owner_id, version, kek_id, wrapped_dek, nonce, ciphertext,
                    created_at)
                    VALUES (\(bind: UUID()), \(bind: UUID()), \(bind: owner), 1, 'primary', \(bind: Data([1])), \
                    \(bind: Data([1])), \(bind: Data([1])), \(bind: Date()))
                    """
                ).run()
            }
        }
        // An organization (not a user) can own an integration now, and deleting it deletes that integration.
        let organizations = SQLOrganizationStore(database: database, audit: audit)
        let team = try await organizations.create(name: "team", by: owner, actor: .system)
        let shared = try await integrations.create(
            ownerID: team.id, name: "shared", type: .openai, config: [:], credentials: .apiKey("sk-shared-key-0123"),
            actor: .system)
        try await organizations.delete(id: team.id, confirmation: "team", actor: .system)
        await #expect(throws: KeyhavenError.notFound) { _ = try await integrations.find(id: shared.id, for: owner) }
        #expect(try await secrets.versions(of: SecretOwner(integrationID: shared.id, ownerID: team.id)).isEmpty)
        #expect(try await audit.verify() == .intact(events: try await auditCount(database)))
        if kind == .postgres { await database.shutdown() }
    }

    private func auditCount(_ database: Database) async throws -> Int {
        try await database.withConnection { sql in
            try await sql.raw("SELECT COUNT(*) AS n FROM audit_events").first()?.decode(column: "n", as: Int.self) ?? 0
        }
    }
}
