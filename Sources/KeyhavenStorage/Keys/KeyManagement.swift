import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import Logging
import SQLKit

/// Master-key operations: status, rotation (SPEC §4, resumable and safe beside running servers), retirement.
/// Their database work runs as long work (``Database/withConnection(short:long:_:)``): a rotation over millions of
/// rows is not cut short by the statement timeout the servers run with.
///
/// ## The master keys' lifecycle (`Keys/`)
///
/// Every secret version is sealed under a data key of its own, and the data key is wrapped by a master key from the
/// configured keyring (`KEYHAVEN_MASTER_KEY` or `KEYHAVEN_KEYRING_FILE`: a ``KeyringSource``); the audit chain's
/// keys are wrapped by a master key too. The database never holds a master key, only the keyring's state in
/// `keyring_keys`: each key's id, a canary only that key opens, whether it is the active key, and how many data keys
/// it has wrapped. This folder holds:
///
/// - ``LiveKeyring``: the master keys a running process holds. Opening it is the start-up check: every key that the
///   database marks active, or that a secret or an audit key names, must be held and open its canary, or the process
///   refuses to start, naming the key. A fresh, empty database registers the configured keys, the newest active (for
///   `serve`, a newly generated keyring file when none is configured). A key named by a row but not held by the
///   process (another process rotated) is read again from the source and trusted only once it opens its canary.
/// - ``AuditKeys``: the audit chain's keys, unwrapped with the master keys; a database without one gets its first,
///   wrapped by the active master key.
/// - `KeyManagement` (this type): `keyhaven keys status`, `keys rotate` and `keys retire`, called through
///   `KeyhavenOperations` in KeyhavenApp.
/// - `KeyringRegistry`: reads and writes `keyring_keys` for the types above, for ``SQLSecretStore`` (which counts
///   each wrap against the active key and refuses past the wrap limit) and for KeyhavenBackup's `DatabaseBackup`
///   (which checks the keys a backup carries or needs).
///
/// Invariants:
/// - At most one key is active (a unique index) and new data keys are wrapped with it alone; every `secrets` and
///   `audit_keys` row names a registered key (a foreign key).
/// - A master key is trusted only once it opens its canary; a keyring file that other users can read is refused.
/// - A rotation writes its new key to the keyring file before the database names it, then re-wraps the data keys
///   in batches that each commit on their own: killed at any point, the next run finishes the rows still under
///   older keys instead of starting over. A data key that does not open is reported and left as it is; the audit
///   keys follow the new master key too.
/// - A key is retired only when it is not active and no row names it: from the keyring file first, then from the
///   database, whose log is then emptied of the pages that held data keys wrapped under it.
///
/// Entry points: ``LiveKeyring/open(source:database:allowCreate:logger:)`` and ``AuditKeys/open(database:keyring:)``
/// when a runtime starts; ``status()``, ``rotate(batchSize:pause:progress:)`` and ``retire(id:)`` for the operator.
public struct KeyManagement: Sendable {
    let database: Database
    let source: KeyringSource
    let logger: Logger

    /// Creates the operations for `database` with the keys from `source`.
    public init(database: Database, source: KeyringSource, logger: Logger) {
        self.database = database
        self.source = source
        self.logger = logger
    }

    /// Every key the database or the keyring knows, oldest first.
    ///
    /// - Throws: `KeyhavenError.keyring` if the keyring cannot be read, `.unavailable` if the database cannot.
    public func status() async throws -> [MasterKeyStatus] {
        let keyring = try source.load()
        let registered = try await database.withConnection(long: true) { sql in
            try await KeyringRegistry(sql: sql).all()
        }
        var statuses = registered.map { row in
            MasterKeyStatus(
                id: row.id, active: row.active, registered: true,
                inKeyring: keyring.key(id: row.id).map { Canary.verify(row.canary, kek: $0) } ?? false,
                rows: row.references, wraps: row.wrapCount, createdAt: row.createdAt)
        }
        for key in keyring.keys where !registered.contains(where: { $0.id == key.id }) {
            statuses.append(
                MasterKeyStatus(
                    id: key.id, active: false, registered: false, inKeyring: true, rows: 0, wraps: 0, createdAt: nil))
        }
        return statuses
    }

    /// Makes a new master key active and re-wraps every data key with it, in batches.
    ///
    /// The new key is written to the keyring file before the database names it, and each batch commits on its
    /// own, so the command can be killed at any point and run again: a second run finds the rows still wrapped by
    /// older keys and finishes them instead of starting over. Servers running meanwhile keep reading (they hold
    /// the old keys) and pick up the new key for their next write.
    /// - Parameters:
    ///   - batchSize: rows re-wrapped per transaction.
    ///   - pause: a pause between batches, to spare a busy database.
    ///   - progress: called after each batch.
    /// - Throws: `KeyhavenError.keyring` if there is no keyring file to hold the new key or a key is missing or
    ///   wrong; `.unavailable` if the database cannot be reached.
    public func rotate(
        batchSize: Int = 500, pause: Duration = .zero, progress: @Sendable (RotationProgress) -> Void = { _ in }
    ) async throws -> RotationResult {
        guard let file = source.file else {
            throw KeyhavenError.keyring(
                "rotation needs a keyring file to hold the new key: set KEYHAVEN_KEYRING_FILE (keep "
                    + "KEYHAVEN_MASTER_KEY set until the old key is retired)")
        }
        let live = try await LiveKeyring.open(source: source, database: database, allowCreate: false, logger: logger)
        var keyring = live.keyring
        let (registered, pending) = try await database.withConnection(long: true) { sql in
            (try await KeyringRegistry(sql: sql).all(), try await rowsToRewrap(on: sql))
        }
        guard let active = registered.first(where: \.active) else {
            throw KeyhavenError.keyring("the database's keyring state has no active master key")
        }
        let resumed = pending > 0
        var activeKey: MasterKey
        if resumed {
            // An earlier run was interrupted after activating its key: finish its work.
            guard let key = keyring.key(id: active.id) else {
                throw KeyhavenError.keyring("master key \(active.id) is not held")
            }
            activeKey = key
            logger.info("resuming an interrupted rotation", metadata: ["kek_id": "\(active.id)"])
        } else {
            // A key written to the file by a run that died before activating it is used rather than orphaned.
            let fileKeys = file.exists ? try file.load() : Keyring()
            if let unused = fileKeys.keys.last(where: { key in !registered.contains { $0.id == key.id } }) {
                activeKey = unused
            } else {
                activeKey = MasterKey.generate()
                var updated = fileKeys
                updated.add(activeKey)
                try file.save(updated)
            }
            keyring.add(activeKey)
            try await database.transaction(long: true) { sql in
                let registry = KeyringRegistry(sql: sql)
                try await registry.register(activeKey, active: true)
            }
            logger.notice("activated a new master key", metadata: ["kek_id": "\(activeKey.id)"])
        }

        let total = try await database.withConnection(long: true) { sql in try await rowsToRewrap(on: sql) }
        var done = 0
        var failed: [UUID] = []
        progress(RotationProgress(done: 0, total: total))
        // Every row names a registered key (a foreign key), and writers only use the active one, so walking the
        // other registered keys through the kek_id index finds every row to re-wrap.
        for old in registered where old.id != activeKey.id {
            guard let oldKey = keyring.key(id: old.id) else {
                throw KeyhavenError.keyring("master key \(old.id) is not in \(source.summary); cannot re-wrap")
            }
            // Walked in id order, so a row that cannot be re-wrapped is passed over instead of fetched forever.
            var after: UUID?
            while true {
                let batch = try await database.withConnection(long: true) { sql in
                    var query = SQLQueryString("SELECT id, wrapped_dek FROM secrets WHERE kek_id = \(bind: old.id)")
                    if let after {
                        query.appendInterpolation(unsafeRaw: " AND id > ")
                        query.appendInterpolation(bind: after)
                    }
                    query.appendInterpolation(unsafeRaw: " ORDER BY id LIMIT ")
                    query.appendInterpolation(bind: batchSize)
                    return try await sql.raw(query).all().map { row in
                        (
                            id: try row.decode(column: "id", as: UUID.self),
                            wrapped: try row.decode(column: "wrapped_dek", as: Data.self)
                        )
                    }
                }
                guard let last = batch.last else { break }
                after = last.id
                var rewrapped: [(id: UUID, wrapped: Data)] = []
                for row in batch {
                    do {
                        rewrapped.append(
                            (row.id, try Envelope.rewrap(row.wrapped, secretID: row.id, from: oldKey, to: activeKey)))
                    } catch {
                        // One damaged row must not stop the rotation of every other: it is reported, not touched.
                        failed.append(row.id)
                        logger.error(
                            "a data key did not open under its master key; left as it is",
                            metadata: ["secret_id": "\(row.id)"])
                    }
                }
                let toApply = rewrapped
                let updated =
                    toApply.isEmpty
                    ? 0
                    : try await database.transaction(long: true) { sql in
                        let count = try await applyBatch(toApply, from: old.id, to: activeKey.id, on: sql)
                        _ = try await KeyringRegistry(sql: sql).countWraps(count, byKey: activeKey.id)
                        return count
                    }
                done += updated
                progress(RotationProgress(done: done, total: max(total, done)))
                if pause > .zero { try await Task.sleep(for: pause) }
            }
        }
        // The audit keys follow the active master key too (a handful of rows).
        let auditKeys = try await database.withConnection(long: true) { sql in
            try await sql.raw("SELECT id, kek_id, wrapped_key FROM audit_keys WHERE kek_id <> \(bind: activeKey.id)")
                .all().map { row in
                    (
                        id: try row.decode(column: "id", as: String.self),
                        kekID: try row.decode(column: "kek_id", as: String.self),
                        wrapped: try row.decode(column: "wrapped_key", as: Data.self)
                    )
                }
        }
        for row in auditKeys {
            guard let oldKey = keyring.key(id: row.kekID) else {
                throw KeyhavenError.keyring(
                    "master key \(row.kekID) is not in \(source.summary); cannot re-wrap the audit key")
            }
            let rewrapped = try AuditKey.unwrap(row.wrapped, id: row.id, kek: oldKey).wrapped(by: activeKey)
            try await database.transaction(long: true) { sql in
                try await sql.raw(
                    """
                    UPDATE audit_keys SET kek_id = \(bind: activeKey.id), wrapped_key = \(bind: rewrapped)
                    WHERE id = \(bind: row.id) AND kek_id = \(bind: row.kekID)
                    """
                ).run()
            }
        }
        let retirable = try await status().filter { $0.registered && !$0.active && $0.rows == 0 }.map(\.id)
        return RotationResult(
            activeKeyID: activeKey.id, resumed: resumed, rewrapped: done, retirable: retirable, failed: failed)
    }

    /// Removes a master key from the keyring file and the database, once no row references it.
    ///
    /// - Throws: `KeyhavenError.keyring` if the key is active, still wraps secrets, or is unknown.
    public func retire(id: String) async throws {
        let statuses = try await status()
        guard let key = statuses.first(where: { $0.id == id }) else {
            throw KeyhavenError.keyring("no master key named \(id)")
        }
        guard !key.active else {
            throw KeyhavenError.keyring("\(id) is the active master key; rotate to a new key first")
        }
        guard key.rows == 0 else {
            throw KeyhavenError.keyring("\(id) still wraps \(key.rows) secrets; run keyhaven keys rotate first")
        }
        // The file first: a crash in between leaves a database row no secret references, which is harmless,
        // rather than a key in the file that a later rotation could pick up again.
        if let file = source.file, file.exists {
            var fileKeys = try file.load()
            if fileKeys.key(id: id) != nil {
                fileKeys.remove(id: id)
                try file.save(fileKeys)
            }
        }
        if key.registered {
            let deleted = try await database.transaction(long: true) { sql in
                try await sql.raw(
                    """
                    DELETE FROM keyring_keys WHERE id = \(bind: id) AND NOT active
                    AND NOT EXISTS (SELECT 1 FROM secrets WHERE kek_id = \(bind: id))
                    AND NOT EXISTS (SELECT 1 FROM audit_keys WHERE kek_id = \(bind: id)) RETURNING id
                    """
                ).all().count
            }
            guard deleted == 1 else {
                throw KeyhavenError.keyring("\(id) became referenced while retiring it; run keyhaven keys rotate")
            }
        }
        // The secrets' keys wrapped under the retired key, from before their rotation, leave the database's log.
        await database.eraseDestroyedFromLog()
    }

    private func rowsToRewrap(on sql: any SQLDatabase) async throws -> Int {
        try await sql.raw(
            """
            SELECT (SELECT COUNT(*) FROM secrets WHERE kek_id <> (SELECT id FROM keyring_keys WHERE active))
            + (SELECT COUNT(*) FROM audit_keys WHERE kek_id <> (SELECT id FROM keyring_keys WHERE active)) AS n
            """
        ).first()?.decode(column: "n", as: Int.self) ?? 0
    }

    /// Writes one batch of re-wrapped data keys in a single statement; a row changed meanwhile (destroyed, or
    /// re-wrapped by another run) is skipped.
    private func applyBatch(
        _ rows: [(id: UUID, wrapped: Data)], from oldKekID: String, to newKekID: String, on sql: any SQLDatabase
    ) async throws -> Int {
        var query = SQLQueryString("WITH v(id, w) AS (VALUES ")
        for (index, row) in rows.enumerated() {
            query.appendInterpolation(unsafeRaw: index == 0 ? "(" : ", (")
            query.appendInterpolation(bind: row.id)
            query.appendInterpolation(unsafeRaw: ", ")
            query.appendInterpolation(bind: row.wrapped)
            query.appendInterpolation(unsafeRaw: ")")
        }
        query.appendInterpolation(unsafeRaw: ") UPDATE secrets SET kek_id = ")
        query.appendInterpolation(bind: newKekID)
        query.appendInterpolation(unsafeRaw: ", wrapped_dek = v.w FROM v WHERE secrets.id = v.id AND secrets.kek_id = ")
        query.appendInterpolation(bind: oldKekID)
        query.appendInterpolation(unsafeRaw: " RETURNING secrets.id")
        return try await sql.raw(query).all().count
    }
}

/// One master key as `keyhaven keys status` shows it.
public struct MasterKeyStatus: Sendable, Equatable {
    /// The key id.
    public var id: String
    /// Whether new data keys are wrapped with it.
    public var active: Bool
    /// Whether the database knows the key (false for a key only in the keyring, not yet activated).
    public var registered: Bool
    /// Whether this process's keyring holds the key.
    public var inKeyring: Bool
    /// How many secret rows it wraps now.
    public var rows: Int
    /// How many data keys it has wrapped in all.
    public var wraps: Int64
    /// When the database first saw it.
    public var createdAt: Date?
}

/// Progress of a rotation, reported after every batch.
public struct RotationProgress: Sendable {
    /// Rows re-wrapped so far in this run.
    public var done: Int
    /// Rows that needed re-wrapping when this run started.
    public var total: Int
}

/// What a rotation did.
public struct RotationResult: Sendable {
    /// The key that is active now.
    public var activeKeyID: String
    /// Whether this run continued an interrupted rotation instead of creating a new key.
    public var resumed: Bool
    /// Rows re-wrapped in this run.
    public var rewrapped: Int
    /// Keys that no longer wrap anything and may be retired.
    public var retirable: [String]
    /// Secrets whose data key did not open under its master key: left as they are, for the operator.
    public var failed: [UUID] = []
}
