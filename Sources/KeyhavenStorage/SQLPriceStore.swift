import Crypto
import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

/// The imported price table in `price_table` (one row) and negotiated prices in `price_overrides`.
public struct SQLPriceStore: PriceStore {
    let database: Database
    let audit: SQLAuditLog

    /// Creates the store.
    public init(database: Database, audit: SQLAuditLog) {
        self.database = database
        self.audit = audit
    }

    public func importedTableHash() async throws -> String? {
        try await database.withConnection { sql in
            try await sql.raw("SELECT sha256 FROM price_table WHERE id = 1").first()?.decode(
                column: "sha256", as: String.self)
        }
    }

    public func importedTable() async throws -> (body: Data, sha256: String)? {
        try await database.withConnection { sql in
            guard let row = try await sql.raw("SELECT body, sha256 FROM price_table WHERE id = 1").first() else {
                return nil
            }
            return (
                Data(try row.decode(column: "body", as: String.self).utf8),
                try row.decode(column: "sha256", as: String.self)
            )
        }
    }

    public func importTable(_ body: Data, models: Int, actor: AuditActor) async throws -> String {
        guard let text = String(data: body, encoding: .utf8) else {
            throw KeyhavenError.badRequest("The price table is not UTF-8.")
        }
        let hash = SHA256.hash(data: body).map { String(format: "%02x", $0) }.joined()
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO price_table (id, body, sha256, models, imported_at)
                VALUES (1, \(bind: text), \(bind: hash), \(bind: models), \(bind: Date()))
                ON CONFLICT (id) DO UPDATE SET body = excluded.body, sha256 = excluded.sha256, models = excluded.models,
                imported_at = excluded.imported_at
                """
            ).run()
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .pricesImport,
                    detail: ["sha256": .string(hash), "models": .number(Double(models))]),
                on: sql)
        }
        return hash
    }

    public func overrides(ownerID: UUID) async throws -> [PriceOverride] {
        try await database.withConnection { sql in
            try await sql.raw("SELECT * FROM price_overrides WHERE owner_id = \(bind: ownerID) ORDER BY model").all()
                .map { row in
                    PriceOverride(
                        model: try row.decode(column: "model", as: String.self),
                        inputMicrosPerMillion: try row.decode(column: "input_micros", as: Int64.self),
                        outputMicrosPerMillion: try row.decode(column: "output_micros", as: Int64.self),
                        cachedInputMicrosPerMillion: try row.decode(column: "cached_input_micros", as: Int64?.self))
                }
        }
    }

    public func setOverrides(_ overrides: [PriceOverride], ownerID: UUID, actor: AuditActor) async throws {
        let now = Date()
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM price_overrides WHERE owner_id = \(bind: ownerID)").run()
            for price in overrides {
                try await sql.raw(
                    """
                    INSERT INTO price_overrides (id, owner_id, model, input_micros, output_micros, cached_input_micros,
                    updated_at)
                    VALUES (\(bind: UUID()), \(bind: ownerID), \(bind: price.model),
                    \(bind: price.inputMicrosPerMillion), \(bind: price.outputMicrosPerMillion),
                    \(bind: price.cachedInputMicrosPerMillion), \(bind: now))
                    """
                ).run()
            }
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .pricesUpdate, ownerID: ownerID,
                    detail: ["models": .array(overrides.map { .string($0.model) })]),
                on: sql)
        }
    }
}
