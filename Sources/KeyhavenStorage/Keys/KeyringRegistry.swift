import Foundation
import KeyhavenCore
import KeyhavenCrypto
import SQLKit

/// The keyring state kept in the database (`keyring_keys`): which master keys exist, which one is active for new
/// wraps, how many wraps each has done, and each key's canary.
package struct KeyringRegistry {
    let sql: any SQLDatabase

    package init(sql: any SQLDatabase) {
        self.sql = sql
    }

    package struct Row: Sendable {
        package var id: String
        package var canary: Data
        package var active: Bool
        var wrapCount: Int64
        var createdAt: Date
        var activatedAt: Date?
        /// Secret rows whose data key it wraps.
        package var references: Int
        /// Audit keys it wraps.
        package var auditKeys: Int
    }

    package func all() async throws -> [Row] {
        let counts = try await referenceCounts(in: "secrets")
        let auditCounts = try await referenceCounts(in: "audit_keys")
        return try await sql.raw(
            "SELECT id, canary, active, wrap_count, created_at, activated_at FROM keyring_keys ORDER BY created_at, id"
        ).all().map { row in
            let id = try row.decode(column: "id", as: String.self)
            return Row(
                id: id,
                canary: try row.decode(column: "canary", as: Data.self),
                active: try row.decode(column: "active", as: Bool.self),
                wrapCount: try row.decode(column: "wrap_count", as: Int64.self),
                createdAt: try row.decode(column: "created_at", as: Date.self),
                activatedAt: try row.decode(column: "activated_at", as: Date?.self),
                references: counts[id] ?? 0,
                auditKeys: auditCounts[id] ?? 0
            )
        }
    }

    /// How many rows of `table` (`secrets` or `audit_keys`) each master key wraps.
    func referenceCounts(in table: String) async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in try await sql.raw("SELECT kek_id, COUNT(*) AS n FROM \(ident: table) GROUP BY kek_id").all() {
            counts[try row.decode(column: "kek_id", as: String.self)] = try row.decode(column: "n", as: Int.self)
        }
        return counts
    }

    func secretCount() async throws -> Int {
        try await sql.raw("SELECT COUNT(*) AS n FROM secrets").first()?.decode(column: "n", as: Int.self) ?? 0
    }

    func canary(id: String) async throws -> Data? {
        try await sql.raw("SELECT canary FROM keyring_keys WHERE id = \(bind: id)").first()?
            .decode(column: "canary", as: Data.self)
    }

    /// Adds a key with its canary; with `active`, it becomes the one key used for new wraps.
    func register(_ key: MasterKey, active: Bool, now: Date = Date()) async throws {
        if active {
            try await sql.raw("UPDATE keyring_keys SET active = \(bind: false) WHERE active").run()
        }
        try await sql.raw(
            """
            INSERT INTO keyring_keys (id, canary, active, wrap_count, created_at, activated_at)
            VALUES (\(bind: key.id), \(bind: Canary.make(key)), \(bind: active), 0, \(bind: now), \
            \(bind: active ? now : nil))
            """
        ).run()
    }

    /// Makes an already registered key the active one.
    func activate(id: String, now: Date = Date()) async throws {
        try await sql.raw("UPDATE keyring_keys SET active = \(bind: false) WHERE active").run()
        try await sql.raw(
            "UPDATE keyring_keys SET active = \(bind: true), activated_at = \(bind: now) WHERE id = \(bind: id)"
        ).run()
    }

    /// Counts `count` more wraps by the active key and returns its id and new total, or nil if none is active.
    func countWraps(_ count: Int, byKey id: String? = nil) async throws -> (id: String, total: Int64)? {
        let row: (any SQLRow)?
        if let id {
            row = try await sql.raw(
                """
                UPDATE keyring_keys SET wrap_count = wrap_count + \(bind: count) WHERE id = \(bind: id)
                RETURNING id, wrap_count
                """
            ).first()
        } else {
            row = try await sql.raw(
                "UPDATE keyring_keys SET wrap_count = wrap_count + \(bind: count) WHERE active RETURNING id, wrap_count"
            ).first()
        }
        guard let row else { return nil }
        return (try row.decode(column: "id", as: String.self), try row.decode(column: "wrap_count", as: Int64.self))
    }
}
