import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

/// Fallback routes in `gateway_routes`; the integrations are a JSON array of ids, in order.
public struct SQLRouteStore: RouteStore {
    let database: Database
    let audit: SQLAuditLog

    /// Creates the store.
    public init(database: Database, audit: SQLAuditLog) {
        self.database = database
        self.audit = audit
    }

    public func route(name: String, ownerID: UUID) async throws -> GatewayRoute {
        try await database.withConnection { sql in
            guard
                let row = try await sql.raw(
                    "SELECT * FROM gateway_routes WHERE owner_id = \(bind: ownerID) AND name = \(bind: name)"
                ).first()
            else { throw KeyhavenError.notFound }
            return try Self.route(row)
        }
    }

    public func routes(ownerID: UUID) async throws -> [GatewayRoute] {
        try await database.withConnection { sql in
            try await sql.raw("SELECT * FROM gateway_routes WHERE owner_id = \(bind: ownerID) ORDER BY name").all()
                .map(Self.route)
        }
    }

    public func put(_ route: GatewayRoute, actor: AuditActor) async throws {
        let ids = "[" + route.integrationIDs.map { "\"\($0.lowercasedText)\"" }.joined(separator: ",") + "]"
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO gateway_routes (id, owner_id, name, integration_ids, created_at, updated_at)
                VALUES (\(bind: UUID()), \(bind: route.ownerID), \(bind: route.name), \(bind: ids),
                \(bind: route.updatedAt), \(bind: route.updatedAt))
                ON CONFLICT (owner_id, name) DO UPDATE SET integration_ids = excluded.integration_ids,
                updated_at = excluded.updated_at
                """
            ).run()
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .routeUpdate, ownerID: route.ownerID,
                    detail: [
                        "route": .string(route.name),
                        "integration_ids": .array(route.integrationIDs.map { .string($0.lowercasedText) }),
                    ]),
                on: sql)
        }
    }

    public func delete(name: String, ownerID: UUID, actor: AuditActor) async throws {
        try await database.transaction { sql in
            let deleted = try await sql.raw(
                "DELETE FROM gateway_routes WHERE owner_id = \(bind: ownerID) AND name = \(bind: name) RETURNING id"
            ).all()
            guard !deleted.isEmpty else { throw KeyhavenError.notFound }
            try await audit.append(
                AuditEntry(actor: actor, action: .routeDelete, ownerID: ownerID, detail: ["route": .string(name)]),
                on: sql)
        }
    }

    static func route(_ row: any SQLRow) throws -> GatewayRoute {
        let text = try row.decode(column: "integration_ids", as: String.self)
        guard let list = try? Database.jsonDecoder.decode([String].self, from: Data(text.utf8)) else {
            throw KeyhavenError.internalError
        }
        return GatewayRoute(
            name: try row.decode(column: "name", as: String.self),
            ownerID: try row.decode(column: "owner_id", as: UUID.self),
            integrationIDs: list.compactMap { UUID(text: $0) },
            updatedAt: try row.decode(column: "updated_at", as: Date.self))
    }
}
