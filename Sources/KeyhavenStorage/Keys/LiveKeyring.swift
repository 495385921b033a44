import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import Logging
import SQLKit
import Synchronization

/// The master keys a running process uses, checked against the database's keyring state.
///
/// Opening it is the start-up check of SPEC §4: every key that the database marks active or that any secret row
/// references must be present and must open its canary, otherwise Keyhaven refuses to start with a message that
/// says which key is missing or wrong. A fresh, empty database gets a newly generated keyring file.
///
/// When a row names a key this process does not hold (another process rotated the master key), the source is
/// read again and the new key is accepted only after it opens its canary.
public final class LiveKeyring: Sendable {
    let source: KeyringSource
    private let state: Mutex<State>
    private let logger: Logger

    private struct State {
        var keyring: Keyring
        /// When a reload last failed to find a key, so a flood of requests naming it does not read the file each.
        var misses: [String: ContinuousClock.Instant] = [:]
    }

    init(source: KeyringSource, keyring: Keyring, logger: Logger) {
        self.source = source
        self.state = Mutex(State(keyring: keyring))
        self.logger = logger
    }

    /// The ids of the keys held now.
    public var ids: [String] { state.withLock { $0.keyring.ids } }

    /// The keys held now (each has opened its canary).
    public var keyring: Keyring { state.withLock { $0.keyring } }

    /// The key with this id, reading the source again if it is not held yet.
    ///
    /// - Parameter sql: the connection to read the key's canary from (the caller's transaction, if any).
    /// - Throws: `KeyhavenError.keyring` if the key is not in the source or does not open its canary.
    func key(id: String, on sql: any SQLDatabase) async throws -> MasterKey {
        if let key = state.withLock({ $0.keyring.key(id: id) }) { return key }
        return try await reload(wanting: id, on: sql)
    }

    private func reload(wanting id: String, on sql: any SQLDatabase) async throws -> MasterKey {
        let recentlyMissed = state.withLock { state in
            state.misses[id].map { $0.duration(to: .now) < .seconds(1) } ?? false
        }
        guard !recentlyMissed else { throw Self.missing(id) }
        guard let key = (try? source.load())?.key(id: id) else {
            state.withLock { $0.misses[id] = .now }
            logger.error(
                "a master key named by the database is not in the keyring source", metadata: ["kek_id": "\(id)"])
            throw Self.missing(id)
        }
        let canary = try await KeyringRegistry(sql: sql).canary(id: id)
        guard let canary, Canary.verify(canary, kek: key) else {
            logger.critical("a reloaded master key does not open its canary", metadata: ["kek_id": "\(id)"])
            throw KeyhavenError.keyring("master key \(id) does not open its canary")
        }
        state.withLock { $0.keyring.add(key) }
        logger.notice("loaded a new master key", metadata: ["kek_id": "\(id)"])
        return key
    }

    private static func missing(_ id: String) -> KeyhavenError {
        .keyring("master key \(id) is not in this process's keyring")
    }
}

extension LiveKeyring {
    /// Loads the keys from `source` and checks them against `database` (SPEC §4).
    ///
    /// - Parameter allowCreate: whether a fresh, empty database may get a newly generated keyring file (true for
    ///   `serve`); the new file is written with mode 0600 and announced loudly in the log.
    /// - Throws: `KeyhavenError.keyring` with a one-line reason when a key is missing or wrong, or when no key is
    ///   configured for a database that already holds secrets.
    public static func open(
        source: KeyringSource, database: Database, allowCreate: Bool, logger: Logger
    ) async throws -> LiveKeyring {
        // Like ssh with a private key: a keyring others can read is refused, not merely warned about.
        if let file = source.file, file.exists, file.isReadableByOthers {
            throw KeyhavenError.keyring(
                "the keyring file \(file.path) can be read by other users; restrict it with: chmod 600 \(file.path)")
        }
        var keyring = try source.load()
        return try await database.transaction { sql in
            let registry = KeyringRegistry(sql: sql)
            if database.kind == .postgres {
                // Two instances bootstrapping one fresh database must not both register a key.
                try await sql.raw(Database.advisoryLock("keyring")).run()
            }
            let registered = try await registry.all()
            if registered.isEmpty {
                keyring = try await bootstrap(
                    keyring: keyring, source: source, registry: registry, allowCreate: allowCreate, logger: logger)
            } else {
                keyring = try await check(keyring: keyring, against: registered, source: source, logger: logger)
            }
            return LiveKeyring(source: source, keyring: keyring, logger: logger)
        }
    }

    private static func bootstrap(
        keyring: Keyring, source: KeyringSource, registry: KeyringRegistry, allowCreate: Bool, logger: Logger
    ) async throws -> Keyring {
        guard try await registry.secretCount() == 0 else {
            throw KeyhavenError.keyring(
                "this database holds secrets but no keyring state; refusing to start (restore the database backup)")
        }
        var keyring = keyring
        if keyring.isEmpty {
            guard allowCreate, let file = source.file else {
                throw KeyhavenError.keyring(
                    "no master key is configured: set KEYHAVEN_MASTER_KEY or KEYHAVEN_KEYRING_FILE")
            }
            let key = MasterKey.generate()
            try file.save(Keyring([key]))
            keyring.add(key)
            logger.critical(
                """
                GENERATED A NEW MASTER KEYRING at \(file.path) (mode 0600). BACK IT UP NOW and keep it apart from \
                database backups: without it no stored secret can ever be decrypted.
                """)
        }
        // The newest key configured becomes the active one.
        guard let active = keyring.keys.last else { throw KeyhavenError.keyring("no master key is configured") }
        for key in keyring.keys {
            try await registry.register(key, active: key.id == active.id)
        }
        logger.info("registered the master keyring", metadata: ["active_kek_id": "\(active.id)"])
        return keyring
    }

    private static func check(
        keyring: Keyring, against registered: [KeyringRegistry.Row], source: KeyringSource, logger: Logger
    ) async throws -> Keyring {
        var trusted = Keyring()
        for row in registered {
            let needed = row.active || row.references > 0 || row.auditKeys > 0
            guard let key = keyring.key(id: row.id) else {
                if needed {
                    let role =
                        row.active
                        ? "the active master key"
                        : "a master key that wraps \(row.references) secrets and \(row.auditKeys) audit keys"
                    throw KeyhavenError.keyring(
                        "missing master key: \(row.id) (\(role)) is not in \(source.summary); "
                            + "restore it from your keyring backup")
                }
                continue
            }
            guard Canary.verify(row.canary, kek: key) else {
                if needed {
                    throw KeyhavenError.keyring(
                        "wrong master key: \(row.id) from \(source.summary) does not open this database's canary; "
                            + "it is not the key this database was written with")
                }
                logger.warning(
                    "an unused master key does not open its canary; ignoring it", metadata: ["kek_id": "\(row.id)"])
                continue
            }
            trusted.add(key)
        }
        guard registered.contains(where: \.active) else {
            throw KeyhavenError.keyring("the database's keyring state has no active master key")
        }
        return trusted
    }
}
