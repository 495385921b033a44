import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenStorage
import SQLKit

extension DatabaseBackup {
    /// The most bound values in one INSERT (SQLite allows 32,766, PostgreSQL 65,535).
    static let maximumBindsPerStatement = 30_000

    /// Loads a backup into this database, which must be empty, in one transaction, and checks it before
    /// committing: row counts, the audit chain, and that every secret version opens with the keyring (the
    /// backup's keys, then `configured`). Any failure rolls everything back, so the database is left empty; a
    /// process killed midway leaves it empty too. The backup's master keys that `configured` lacks are added to
    /// its keyring file (0600) just before the commit.
    ///
    /// - Throws: `KeyhavenError.conflict` if the database is not empty, `BackupError` for a damaged or tampered
    ///   backup, `KeyhavenError.keyring` if a needed master key is missing, `KeyhavenError.badRequest` if a check
    ///   fails.
    public func restore<Source: BackupByteSource>(
        from reader: BackupReader<Source>, configured: KeyringSource,
        progress: @Sendable (BackupProgress) -> Void = { _ in }
    ) async throws -> RestoreSummary {
        let header = reader.header
        guard header.schemaVersion <= Migrator.latestVersion else {
            throw KeyhavenError.badRequest(
                "the backup is of schema version \(header.schemaVersion), newer than this Keyhaven knows "
                    + "(\(Migrator.latestVersion)): restore it with a newer Keyhaven")
        }
        let configuredKeys = try configured.load()
        let kind = database.kind
        return try await database.transaction(long: true) { sql in
            if kind == .postgres { try await sql.raw(Database.advisoryLock("restore")).run() }
            for table in BackupSchema.tables {
                if try await sql.raw("SELECT 1 AS one FROM \(ident: table.name) LIMIT 1").first() != nil {
                    throw KeyhavenError.conflict(
                        "the target database is not empty (table \(table.name) has rows): restore only into a new, "
                            + "empty database")
                }
            }
            var backupKeys = Keyring()
            var loaded: Int64 = 0
            let total = header.totalRows
            var current: (table: BackupSchema.Table, columns: [BackupColumn], batch: [[BackupValue]])?
            progress(BackupProgress(done: 0, total: total))
            loop: while let record = try reader.next() {
                switch record {
                case .keyring(let keyring):
                    backupKeys = keyring
                case .table(let name, let columns):
                    guard let table = BackupSchema.table(named: name) else {
                        throw BackupError.malformed("table \(name) is unknown to this Keyhaven")
                    }
                    for column in columns where !table.columns.contains(column) {
                        throw BackupError.malformed("column \(name).\(column.name) is unknown to this Keyhaven")
                    }
                    current = (table, columns, [])
                case .row(let values):
                    guard var state = current else { continue }
                    state.batch.append(values)
                    current = nil
                    if state.batch.count * state.columns.count >= Self.maximumBindsPerStatement - state.columns.count
                        || state.batch.count >= 1000
                    {
                        try await Self.insert(state.batch, into: state.table.name, columns: state.columns, on: sql)
                        loaded += Int64(state.batch.count)
                        state.batch.removeAll(keepingCapacity: true)
                        progress(BackupProgress(done: loaded, total: total))
                    }
                    current = state
                case .tableEnd:
                    if let state = current, !state.batch.isEmpty {
                        try await Self.insert(state.batch, into: state.table.name, columns: state.columns, on: sql)
                        loaded += Int64(state.batch.count)
                        progress(BackupProgress(done: loaded, total: total))
                    }
                    current = nil
                case .end:
                    break loop
                }
            }
            if header.schemaVersion < Migration.addRotation.version {
                // Columns a backup of an older schema does not hold get what migration 0008 would have given them.
                try await sql.raw(
                    """
                    UPDATE integrations SET latest_version = current_version,
                    credentials_changed_at = (SELECT s.created_at FROM secrets s
                    WHERE s.integration_id = integrations.id AND s.version = integrations.current_version)
                    """
                ).run()
            }
            for table in header.tables {
                let count =
                    try await sql.raw("SELECT COUNT(*) AS n FROM \(ident: table.name)").first()?
                    .decode(column: "n", as: Int64.self) ?? -1
                guard count == table.rows else {
                    throw BackupError.countMismatch(table: table.name, header: table.rows, found: count)
                }
            }
            let keyring = try await Self.restoredKeyring(backup: backupKeys, configured: configuredKeys, on: sql)
            let opened = try await Self.openEverySecret(keyring: keyring, on: sql)
            let auditKeys = try await AuditKeys.load(on: sql, keyring: keyring)
            let auditEvents: Int
            switch try await SQLAuditLog.verify(on: sql, keys: auditKeys) {
            case .intact(let events):
                auditEvents = events
            case .broken(let seq, let reason):
                throw KeyhavenError.badRequest("the restored audit chain is broken at event \(seq): \(reason)")
            }
            if auditKeys.key(id: auditKeys.current.id) != nil {
                try await SQLAuditLog(database: database, keys: auditKeys).append(
                    AuditEntry(
                        actor: .operator, action: .backupRestore,
                        detail: [
                            "source": .string(header.source), "created_at": .string(header.createdAt),
                            "rows": .number(Double(loaded)), "includes_keyring": .bool(header.includesKeyring),
                        ]),
                    on: sql)
            }
            let written = try Self.saveMissingKeys(backupKeys, configured: configured)
            return RestoreSummary(
                header: header, rows: loaded, secretsOpened: opened, auditEvents: auditEvents, keysWritten: written)
        }
    }

    static func insert(
        _ rows: [[BackupValue]], into table: String, columns: [BackupColumn], on sql: any SQLDatabase
    ) async throws {
        var query = SQLQueryString("INSERT INTO ")
        query.appendInterpolation(ident: table)
        query.appendInterpolation(unsafeRaw: " (")
        for (index, column) in columns.enumerated() {
            if index > 0 { query.appendInterpolation(unsafeRaw: ", ") }
            query.appendInterpolation(ident: column.name)
        }
        query.appendInterpolation(unsafeRaw: ") VALUES ")
        for (index, row) in rows.enumerated() {
            query.appendInterpolation(unsafeRaw: index == 0 ? "(" : ", (")
            query.appendInterpolation(binds: zip(row, columns).map { bindable($0, as: $1.type) })
            query.appendInterpolation(unsafeRaw: ")")
        }
        try await sql.raw(query).run()
    }

    /// The master keys the restored rows need: for each registered key, the backup's copy or the configured one,
    /// whichever opens its canary.
    static func restoredKeyring(backup: Keyring, configured: Keyring, on sql: any SQLDatabase) async throws -> Keyring {
        var keyring = Keyring()
        for row in try await KeyringRegistry(sql: sql).all() {
            if let held = configured.key(id: row.id), !Canary.verify(row.canary, kek: held),
                let key = backup.key(id: row.id), Canary.verify(row.canary, kek: key)
            {
                throw KeyhavenError.keyring(
                    "the configured keyring holds another key named \(row.id) than the one in the backup: restore "
                        + "with a keyring file that does not hold it")
            }
            let candidates = [configured.key(id: row.id), backup.key(id: row.id)].compactMap { $0 }
            if let key = candidates.first(where: { Canary.verify(row.canary, kek: $0) }) {
                keyring.add(key)
            } else if row.active || row.references > 0 || row.auditKeys > 0 {
                throw KeyhavenError.keyring(
                    "the backup needs master key \(row.id), which is "
                        + (candidates.isEmpty
                            ? "neither in the backup nor in the configured keyring" : "wrong where it was found")
                        + ": restore a backup made with --include-keyring, or configure the keyring it was made with")
            }
        }
        return keyring
    }

    /// Opens every secret version (unwrap the data key, open the ciphertext under its row binding); returns how
    /// many opened.
    static func openEverySecret(keyring: Keyring, on sql: any SQLDatabase) async throws -> Int {
        var after: UUID?
        var opened = 0
        while true {
            var query = SQLQueryString(
                "SELECT id, integration_id, owner_id, version, kek_id, wrapped_dek, nonce, ciphertext FROM secrets")
            if let after {
                query.appendInterpolation(unsafeRaw: " WHERE id > ")
                query.appendInterpolation(bind: after)
            }
            query.appendInterpolation(unsafeRaw: " ORDER BY id LIMIT ")
            query.appendInterpolation(bind: pageSize)
            let rows = try await sql.raw(query).all()
            for row in rows {
                let id = try row.decode(column: "id", as: UUID.self)
                let binding = SecretBinding(
                    secretID: id, integrationID: try row.decode(column: "integration_id", as: UUID.self),
                    ownerID: try row.decode(column: "owner_id", as: UUID.self),
                    version: try row.decode(column: "version", as: Int.self))
                let sealed = SealedSecret(
                    kekID: try row.decode(column: "kek_id", as: String.self),
                    wrappedDEK: try row.decode(column: "wrapped_dek", as: Data.self),
                    nonce: try row.decode(column: "nonce", as: Data.self),
                    ciphertext: try row.decode(column: "ciphertext", as: Data.self))
                do {
                    _ = try Envelope.open(sealed, binding: binding, keyring: keyring)
                } catch {
                    throw KeyhavenError.badRequest(
                        "secret version \(binding.version) of integration \(binding.integrationID.lowercasedText) "
                            + "(secret \(id.lowercasedText)) does not open with master key \(sealed.kekID)")
                }
                opened += 1
                after = id
            }
            if rows.count < pageSize { return opened }
        }
    }

    /// Adds the backup's keys that the configured keyring lacks to its keyring file; returns their ids.
    static func saveMissingKeys(_ backup: Keyring, configured: KeyringSource) throws -> [String] {
        let held = try configured.load()
        let missing = backup.keys.filter { key in held.key(id: key.id) == nil }
        guard !missing.isEmpty else { return [] }
        guard let file = configured.file else {
            throw KeyhavenError.keyring(
                "the backup's master keys must be written to a keyring file: set KEYHAVEN_KEYRING_FILE")
        }
        var keys = file.exists ? try file.load() : Keyring()
        for key in missing { keys.add(key) }
        try file.save(keys)
        return missing.map(\.id)
    }
}

/// What a restore loaded and checked.
public struct RestoreSummary: Sendable {
    /// The backup's header.
    public var header: BackupHeader
    /// Rows loaded.
    public var rows: Int64
    /// Secret versions that opened with the keyring.
    public var secretsOpened: Int
    /// Audit events whose chain verified.
    public var auditEvents: Int
    /// Master keys from the backup that were added to the keyring file.
    public var keysWritten: [String]
}
