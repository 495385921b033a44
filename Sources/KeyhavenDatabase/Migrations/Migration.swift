import Crypto
import Foundation
import KeyhavenCore
import SQLKit

/// One numbered schema change. Migrations are append-only: once released, a migration's SQL never changes
/// (the migrator refuses to run against a database where an applied migration's checksum differs).
package struct Migration: Sendable {
    /// Its number: migrations apply in this order, and a database records the numbers applied.
    package let version: Int
    let name: String
    let statements: @Sendable (DatabaseKind) -> [String]

    func checksum(for kind: DatabaseKind) -> String {
        SHA256.hash(data: Data(statements(kind).joined(separator: ";\n").utf8))
            .map { String(format: "%02x", $0) }.joined()
    }
}

/// Applies the numbered migrations in order, once each, on SQLite or PostgreSQL.
///
/// The numbered migrations (`Migrations/0001_…` onwards) live here, beside the migrator, rather than with the
/// stores in `KeyhavenStorage` whose tables they describe. They are one ordered, append-only history that the
/// migrator checks, by checksum, against every database it opens; the newest version is what a build refuses to
/// go beyond and what a backup records as its schema; and a database is migrated before any store is made on it.
/// With the schema in the engine, every program that opens a ``Database`` (the server, the command line, the
/// benchmark, the test fixtures) migrates it the same way without depending on the stores.
public struct Migrator: Sendable {
    static let all: [Migration] = [
        .createCoreTables,
        .addAccountsTokensAudit,
        .addVerificationState,
        .addVerificationAttempts,
        .keyAuditChain,
        .indexIntegrationsByOwnerAndID,
        .addBackupSchedule,
        .addRotation,
        .addOrganizations,
        .addUsage,
        .addUsageLimits,
        .addGatewayRoutes,
        .addPrices,
        .addUsageMetering,
        .addMembershipConfirmation,
        .addReadinessProbe,
        .addKeyRetirement,
        .addTemplates,
    ]

    let database: Database

    /// Creates a migrator for `database`.
    public init(database: Database) {
        self.database = database
    }

    /// The newest schema version this build knows.
    public static var latestVersion: Int { all.last?.version ?? 0 }

    /// Applies every pending migration in one transaction; returns the names of those applied.
    ///
    /// Several instances starting at once are safe: on PostgreSQL an advisory lock serialises them, on SQLite the
    /// write lock does. On SQLite the migrations run with foreign-key enforcement off, as SQLite prescribes for
    /// rebuilding a table that others reference (dropping it would otherwise cascade), and every foreign key is
    /// checked before the commit.
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached; `KeyhavenError.configuration` if
    ///   the database was migrated by a newer Keyhaven, an applied migration was changed, or a migration left a
    ///   broken foreign key.
    @discardableResult
    public func migrate() async throws -> [String] {
        try await migrate(through: Self.latestVersion)
    }

    /// Applies the pending migrations up to `version` (a test of one migration starts from the schema before it).
    @discardableResult
    func migrate(through version: Int) async throws -> [String] {
        guard database.kind == .sqlite else { return try await migrateInTransaction(through: version) }
        try await database.setSQLiteForeignKeys(enabled: false)
        do {
            let applied = try await migrateInTransaction(through: version)
            try await database.setSQLiteForeignKeys(enabled: true)
            return applied
        } catch {
            try? await database.setSQLiteForeignKeys(enabled: true)
            throw error
        }
    }

    private func migrateInTransaction(through version: Int) async throws -> [String] {
        let kind = database.kind
        let types = Database.ColumnTypes(kind)
        return try await database.transaction(long: true) { sql in
            if kind == .postgres {
                try await sql.raw(Database.advisoryLock("migrations")).run()
            }
            try await sql.raw(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    checksum TEXT NOT NULL,
                    applied_at \(unsafeRaw: types.timestamp) NOT NULL
                )
                """
            ).run()
            let applied = try await sql.raw("SELECT version, checksum FROM schema_migrations ORDER BY version").all()
            var appliedChecksums: [Int: String] = [:]
            for row in applied {
                appliedChecksums[try row.decode(column: "version", as: Int.self)] =
                    try row.decode(column: "checksum", as: String.self)
            }
            if let newest = appliedChecksums.keys.max(), newest > Self.latestVersion {
                throw KeyhavenError.configuration(
                    "the database schema is at version \(newest), newer than this Keyhaven knows "
                        + "(\(Self.latestVersion)): upgrade Keyhaven")
            }
            var names: [String] = []
            for migration in Self.all where migration.version <= version {
                let checksum = migration.checksum(for: kind)
                if let existing = appliedChecksums[migration.version] {
                    guard existing == checksum else {
                        throw KeyhavenError.configuration(
                            "migration \(migration.version) (\(migration.name)) differs from the one applied to "
                                + "this database; migrations must never change once released")
                    }
                    continue
                }
                for statement in migration.statements(kind) {
                    try await sql.raw("\(unsafeRaw: statement)").run()
                }
                try await sql.insert(into: "schema_migrations")
                    .columns("version", "name", "checksum", "applied_at")
                    .values(SQLBind(migration.version), SQLBind(migration.name), SQLBind(checksum), SQLBind(Date()))
                    .run()
                names.append(String(format: "%04d_%@", migration.version, migration.name))
            }
            if kind == .sqlite, !names.isEmpty, try await sql.raw("PRAGMA foreign_key_check").first() != nil {
                throw KeyhavenError.configuration("a database migration left a broken foreign key; nothing was changed")
            }
            return names
        }
    }

    /// The versions not yet applied.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    public func pending() async throws -> [Int] {
        try await database.withConnection { sql in
            let rows = try await sql.raw("SELECT version FROM schema_migrations").all()
            let applied = Set(try rows.map { try $0.decode(column: "version", as: Int.self) })
            return Self.all.map(\.version).filter { !applied.contains($0) }
        }
    }
}
