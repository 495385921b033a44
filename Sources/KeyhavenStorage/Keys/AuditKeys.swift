import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import SQLKit
import Synchronization

/// The audit keys of a database, unwrapped with the master keys: the newest chains new events, every one verifies
/// the events it chained.
public final class AuditKeys: Sendable {
    /// The key new events and checkpoints are made with.
    public let current: AuditKey
    private let all: [String: AuditKey]

    init(current: AuditKey, all: [String: AuditKey]) {
        self.current = current
        self.all = all
    }

    /// The key with this id, if the database has it.
    public func key(id: String) -> AuditKey? { all[id] }

    /// Loads the audit keys, creating the first one (wrapped by the active master key) on a database without one.
    ///
    /// - Throws: `KeyhavenError.keyring` if a master key that wraps an audit key is missing, `.decryptionFailed`
    ///   if an audit key does not open, `.unavailable` if the database cannot be reached.
    public static func open(database: Database, keyring: LiveKeyring) async throws -> AuditKeys {
        try await database.transaction { sql in
            if database.kind == .postgres {
                // Instances starting together on a fresh database create one audit key, not one each.
                try await sql.raw(Database.advisoryLock("audit-keys")).run()
            }
            var rows = try await sql.raw("SELECT id, kek_id, wrapped_key FROM audit_keys ORDER BY created_at, id").all()
            if rows.isEmpty {
                guard let active = try await KeyringRegistry(sql: sql).all().first(where: \.active) else {
                    throw KeyhavenError.keyring("the database's keyring state has no active master key")
                }
                let key = AuditKey.generate()
                let kek = try await keyring.key(id: active.id, on: sql)
                try await sql.raw(
                    """
                    INSERT INTO audit_keys (id, kek_id, wrapped_key, created_at)
                    VALUES (\(bind: key.id), \(bind: kek.id), \(bind: try key.wrapped(by: kek)), \(bind: Date()))
                    """
                ).run()
                rows = try await sql.raw("SELECT id, kek_id, wrapped_key FROM audit_keys ORDER BY created_at, id").all()
            }
            var keys: [String: AuditKey] = [:]
            var newest: AuditKey?
            for row in rows {
                let id = try row.decode(column: "id", as: String.self)
                let kek = try await keyring.key(id: try row.decode(column: "kek_id", as: String.self), on: sql)
                let key = try AuditKey.unwrap(try row.decode(column: "wrapped_key", as: Data.self), id: id, kek: kek)
                keys[id] = key
                newest = key
            }
            guard let newest else { throw KeyhavenError.internalError }
            return AuditKeys(current: newest, all: keys)
        }
    }

    /// Unwraps every audit key stored on `sql` with `keyring`; a database without audit keys gets a throwaway
    /// current key that verifies nothing (so a keyed event in it is reported, not trusted).
    ///
    /// - Throws: `KeyhavenError.keyring` if a master key is missing, `.decryptionFailed` if a key does not open.
    package static func load(on sql: any SQLDatabase, keyring: Keyring) async throws -> AuditKeys {
        var keys: [String: AuditKey] = [:]
        var newest: AuditKey?
        for row in try await sql.raw("SELECT id, kek_id, wrapped_key FROM audit_keys ORDER BY created_at, id").all() {
            let id = try row.decode(column: "id", as: String.self)
            let kekID = try row.decode(column: "kek_id", as: String.self)
            guard let kek = keyring.key(id: kekID) else {
                throw KeyhavenError.keyring("master key \(kekID), which wraps an audit key, is not held")
            }
            let key = try AuditKey.unwrap(try row.decode(column: "wrapped_key", as: Data.self), id: id, kek: kek)
            keys[id] = key
            newest = key
        }
        return AuditKeys(current: newest ?? AuditKey.generate(), all: keys)
    }
}
