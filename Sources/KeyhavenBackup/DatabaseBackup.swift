import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenStorage
import Logging
import SQLKit

/// Backup and restore of a whole database (SPEC §14): one consistent snapshot of every table written as a
/// backup stream, and a backup loaded into an empty database in one transaction, checked before it commits.
///
/// ## The KeyhavenBackup module
///
/// Everything about backups sits in this module; the commands (`keyhaven backup`, `keyhaven backup verify`,
/// `keyhaven restore`) and the scheduled backups' service (`KEYHAVEN_BACKUP_*`) that drive it are KeyhavenApp's
/// (`Sources/KeyhavenApp/Backups.swift`).
///
/// ### What a backup holds
///
/// Every row of every table in ``BackupSchema/tables`` (users, the keyring's state, organizations, integrations
/// and their sealed secret versions, rotations, tokens, sessions, the audit trail and its keys, usage, limits,
/// routes, prices, rate-limit windows), taken from one read snapshot; not the tables in ``BackupSchema/excluded``
/// (the migrations' bookkeeping, the scheduled backups' lease, the per-minute usage counters, the readiness row).
/// Secrets stay sealed under their master keys as they are in the database; the master keys themselves go inside
/// only when asked (`--include-keyring`), and then the backup alone recovers everything.
///
/// ### The file format (`Format/`)
///
/// A backup file (docs/backup-format.md) starts with a preamble: the magic `KHBACKUP`, the format version, a JSON
/// header readable without the key (source database, schema version, KDF parameters, salt, chunk size, every
/// table with its row count), a key check and the header's HMAC. The rest is a stream of records (table, row,
/// table end, keyring, end) cut into chunks sealed with AES-256-GCM, each nonce holding the chunk's index and
/// whether it is the final one, each chunk bound to the header's MAC, so a changed, reordered, truncated or
/// extended file is refused with its own ``BackupError``. The file's keys come from HKDF over its random salt and
/// either a passphrase stretched with scrypt or a 32-byte key file (``BackupSecret``). ``BackupWriter`` and
/// ``BackupReader`` write and check the stream with memory bounded by one chunk; ``BackupFileOutput`` writes it to
/// a temporary file that is synced and renamed into place only once complete.
///
/// ### Writing and restoring (this type)
///
/// ``write(secret:kdf:keyring:chunkSize:pageSize:progress:sink:)`` reads one snapshot
/// (``Database/readSnapshot(long:_:)``: `REPEATABLE READ` on PostgreSQL, one read transaction on SQLite), paged by
/// primary key as long work, so memory stays bounded and writers are never blocked; each table's row count is
/// taken in the same snapshot, written to the header, and checked against the rows written.
///
/// ``restore(from:configured:progress:)`` (`DatabaseBackup+Restore.swift`) loads a backup into an empty database of
/// either kind, whatever kind it was taken from (SQLite → PostgreSQL is how a deployment moves): the values are
/// typed in the stream, not in SQL, and bound again as the target's types. It runs in one transaction (under an
/// advisory lock on PostgreSQL); row counts, the audit chain and every secret version (opened with the backup's
/// keys or the configured ones) are checked before it commits, and any failure, or a process killed midway,
/// leaves the database empty. The backup's master keys that the configured keyring lacks are written to its
/// keyring file just before the commit; the restore is audited in the restored trail when the backup holds an
/// audit key. A backup of an older schema restores into the current one (the columns migration 8 added are filled
/// in as that migration would have); one of a schema newer than ``Migrator/latestVersion`` is refused.
///
/// ### The schedule
///
/// ``BackupSchedule`` is the lease in `backup_schedule`: the next backup is due at `due_at`, and the one instance
/// that moves it forward takes it, so many servers take one backup per interval; after a failure the holder makes
/// the next one due sooner. KeyhavenApp's service claims it now and then, writes the file, and keeps the newest
/// `KEYHAVEN_BACKUP_KEEP` files.
///
/// Invariants:
/// - ``BackupSchema`` lists every table and column of the migrated schema, parents before children; a test
///   compares it with the migrated database, so a migration that adds a table or a column adds it there too.
/// - Master keys go inside only when asked, and then every key the database needs must be among them and open its
///   canary.
/// - No message of a ``BackupError`` holds a passphrase, a key or a credential.
public struct DatabaseBackup: Sendable {
    let database: Database
    let logger: Logger

    /// Rows read per page of the snapshot, unless told otherwise.
    public static let pageSize = 2000

    /// Creates the operations over `database`.
    public init(database: Database, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    /// Writes one consistent snapshot of every table in ``BackupSchema`` to `sink` as an encrypted backup.
    ///
    /// The snapshot is one read transaction (``Database/readSnapshot(long:_:)``, as long work: no statement timeout),
    /// paged through by primary key, so memory stays bounded and writers are not blocked.
    /// - Parameters:
    ///   - keyring: the master keys to put inside (`--include-keyring`); every key the database needs must be
    ///     among them and open its canary.
    ///   - chunkSize: plaintext bytes per encrypted chunk.
    ///   - pageSize: rows read per query of the snapshot.
    /// - Returns: the header written and the bytes written.
    /// - Throws: `KeyhavenError.keyring` if a needed master key is not in `keyring`, `BackupError` from the
    ///   writer or the sink, `KeyhavenError.unavailable` if the database cannot be read.
    public func write(
        secret: BackupSecret, kdf: BackupKDF = .standard, keyring: Keyring?,
        chunkSize: Int = BackupFormat.defaultChunkSize, pageSize: Int = DatabaseBackup.pageSize,
        progress: @Sendable (BackupProgress) -> Void = { _ in }, sink: @escaping (Data) throws -> Void
    ) async throws -> (header: BackupHeader, bytes: Int64) {
        let kind = database.kind
        return try await database.readSnapshot(long: true) { sql in
            var tables: [BackupHeader.Table] = []
            for table in BackupSchema.tables {
                let rows =
                    try await sql.raw("SELECT COUNT(*) AS n FROM \(ident: table.name)").first()?
                    .decode(column: "n", as: Int64.self) ?? 0
                tables.append(BackupHeader.Table(name: table.name, rows: rows))
            }
            if let keyring { try await Self.checkIncludedKeyring(keyring, on: sql) }
            let schemaVersion =
                try await sql.raw("SELECT MAX(version) AS v FROM schema_migrations").first()?
                .decode(column: "v", as: Int?.self) ?? 0
            let header = BackupHeader(
                source: kind.rawValue, schemaVersion: schemaVersion, includesKeyring: keyring != nil, tables: tables,
                chunkSize: chunkSize)
            let writer = try BackupWriter(header: header, secret: secret, kdf: kdf, sink: sink)
            if let keyring { try writer.append(.keyring(keyring)) }
            let total = header.totalRows
            var done: Int64 = 0
            progress(BackupProgress(done: 0, total: total))
            for (table, counted) in zip(BackupSchema.tables, tables) {
                try writer.append(.table(name: table.name, columns: table.columns))
                let keyIndex = table.columns.firstIndex { $0.name == table.key } ?? 0
                var after: BackupValue?
                var rows: Int64 = 0
                while true {
                    let page = try await sql.raw(Self.pageQuery(table, after: after, limit: pageSize)).all()
                    for row in page {
                        let values = try table.columns.map { try Self.value(row, $0) }
                        try writer.append(.row(values))
                        after = values[keyIndex]
                    }
                    rows += Int64(page.count)
                    done += Int64(page.count)
                    progress(BackupProgress(done: done, total: total))
                    if page.count < pageSize { break }
                }
                guard rows == counted.rows else {
                    // Cannot happen inside one snapshot; refuse rather than write an inconsistent backup.
                    throw KeyhavenError.unavailable("table \(table.name) changed during the snapshot; try again")
                }
                try writer.append(.tableEnd(rows: rows))
            }
            try writer.finish()
            return (header, writer.bytesWritten)
        }
    }

    /// Every master key the database needs (active, or wrapping a secret or an audit key) must be in `keyring`
    /// and open its canary, or the backup would not recover everything by itself.
    static func checkIncludedKeyring(_ keyring: Keyring, on sql: any SQLDatabase) async throws {
        for row in try await KeyringRegistry(sql: sql).all() where row.active || row.references > 0 || row.auditKeys > 0
        {
            guard let key = keyring.key(id: row.id), Canary.verify(row.canary, kek: key) else {
                throw KeyhavenError.keyring(
                    "cannot include the keyring: master key \(row.id), which this database needs, is not in the "
                        + "configured keyring or does not open its canary")
            }
        }
    }

    static func pageQuery(_ table: BackupSchema.Table, after: BackupValue?, limit: Int) -> SQLQueryString {
        var query = SQLQueryString("SELECT ")
        for (index, column) in table.columns.enumerated() {
            if index > 0 { query.appendInterpolation(unsafeRaw: ", ") }
            query.appendInterpolation(ident: column.name)
        }
        query.appendInterpolation(unsafeRaw: " FROM ")
        query.appendInterpolation(ident: table.name)
        if let after {
            query.appendInterpolation(unsafeRaw: " WHERE ")
            query.appendInterpolation(ident: table.key)
            query.appendInterpolation(unsafeRaw: " > ")
            query.appendInterpolation(bind: bindable(after, as: .text))
        }
        query.appendInterpolation(unsafeRaw: " ORDER BY ")
        query.appendInterpolation(ident: table.key)
        query.appendInterpolation(unsafeRaw: " LIMIT ")
        query.appendInterpolation(bind: limit)
        return query
    }

    /// A column of a fetched row as a backup value.
    static func value(_ row: any SQLRow, _ column: BackupColumn) throws -> BackupValue {
        let name = column.name
        switch column.type {
        case .int: return try row.decode(column: name, as: Int64?.self).map(BackupValue.int) ?? .null
        case .double: return try row.decode(column: name, as: Double?.self).map(BackupValue.double) ?? .null
        case .text: return try row.decode(column: name, as: String?.self).map(BackupValue.text) ?? .null
        case .bytes: return try row.decode(column: name, as: Data?.self).map(BackupValue.bytes) ?? .null
        case .bool: return try row.decode(column: name, as: Bool?.self).map(BackupValue.bool) ?? .null
        case .uuid: return try row.decode(column: name, as: UUID?.self).map(BackupValue.uuid) ?? .null
        case .date: return try row.decode(column: name, as: Date?.self).map(BackupValue.date) ?? .null
        }
    }

    /// A backup value as a bind of its column's Swift type (a null keeps its column's type).
    static func bindable(_ value: BackupValue, as type: BackupValueType) -> any Encodable & Sendable {
        switch value {
        case .int(let number): return number
        case .double(let number): return number
        case .text(let text): return text
        case .bytes(let data): return data
        case .bool(let flag): return flag
        case .uuid(let id): return id
        case .date(let date): return date
        case .null:
            switch type {
            case .int: return Int64?.none
            case .double: return Double?.none
            case .text: return String?.none
            case .bytes: return Data?.none
            case .bool: return Bool?.none
            case .uuid: return UUID?.none
            case .date: return Date?.none
            }
        }
    }
}

/// How far a backup or a restore has got, in rows.
public struct BackupProgress: Sendable {
    /// Rows written or loaded so far.
    public var done: Int64
    /// Rows in all.
    public var total: Int64
}
