import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

/// Integration templates in `integration_templates`; settings, rotation and limits are JSON, the allowed endpoints a
/// JSON array. Every change is audited in its transaction.
public struct SQLTemplateStore: TemplateStore {
    let database: Database
    let audit: SQLAuditLog

    /// Creates the store.
    public init(database: Database, audit: SQLAuditLog) {
        self.database = database
        self.audit = audit
    }

    public func templates(ownerID: UUID) async throws -> [IntegrationTemplate] {
        try await database.withConnection { sql in
            try await sql.raw(
                "SELECT * FROM integration_templates WHERE owner_id = \(bind: ownerID) ORDER BY name, id"
            ).all().map(Self.template)
        }
    }

    public func template(id: UUID, ownerID: UUID) async throws -> IntegrationTemplate {
        try await database.withConnection { sql in try await Self.fetch(id: id, ownerID: ownerID, on: sql) }
    }

    public func create(_ template: IntegrationTemplate, actor: AuditActor) async throws -> IntegrationTemplate {
        try await database.transaction { sql in
            try await Self.requireFreeName(template.name, ownerID: template.ownerID, except: nil, on: sql)
            try await sql.raw(
                """
                INSERT INTO integration_templates (id, owner_id, name, type, name_pattern, config, rotation, limits,
                allowed_endpoints, created_at, updated_at)
                VALUES (\(bind: template.id), \(bind: template.ownerID), \(bind: template.name),
                \(bind: template.type.rawValue), \(bind: template.namePattern),
                \(bind: Self.json(.object(template.config))), \(bind: Self.rotation(template.rotation)),
                \(bind: Self.limits(template.limits)),
                \(bind: Self.json(.array(template.allowedEndpoints.map(JSONValue.string)))),
                \(bind: template.createdAt), \(bind: template.updatedAt))
                """
            ).run()
            try await audit.append(Self.entry(.templateCreate, template, actor), on: sql)
            return try await Self.fetch(id: template.id, ownerID: template.ownerID, on: sql)
        }
    }

    public func update(_ template: IntegrationTemplate, actor: AuditActor) async throws -> IntegrationTemplate {
        try await database.transaction { sql in
            try await Self.requireFreeName(template.name, ownerID: template.ownerID, except: template.id, on: sql)
            let changed = try await sql.raw(
                """
                UPDATE integration_templates SET name = \(bind: template.name), type = \(bind: template.type.rawValue),
                name_pattern = \(bind: template.namePattern), config = \(bind: Self.json(.object(template.config))),
                rotation = \(bind: Self.rotation(template.rotation)), limits = \(bind: Self.limits(template.limits)),
                allowed_endpoints = \(bind: Self.json(.array(template.allowedEndpoints.map(JSONValue.string)))),
                updated_at = \(bind: Date())
                WHERE id = \(bind: template.id) AND owner_id = \(bind: template.ownerID) RETURNING id
                """
            ).first()
            guard changed != nil else { throw KeyhavenError.notFound }
            try await audit.append(Self.entry(.templateUpdate, template, actor), on: sql)
            return try await Self.fetch(id: template.id, ownerID: template.ownerID, on: sql)
        }
    }

    public func delete(id: UUID, ownerID: UUID, actor: AuditActor) async throws {
        try await database.transaction { sql in
            let template = try await Self.fetch(id: id, ownerID: ownerID, on: sql)
            try await sql.raw(
                "DELETE FROM integration_templates WHERE id = \(bind: id) AND owner_id = \(bind: ownerID)"
            )
            .run()
            try await sql.raw(
                """
                UPDATE integrations SET template_id = NULL
                WHERE template_id = \(bind: id) AND owner_id = \(bind: ownerID)
                """
            ).run()
            try await audit.append(Self.entry(.templateDelete, template, actor), on: sql)
        }
    }

    // MARK: Rows

    static func fetch(id: UUID, ownerID: UUID, on sql: any SQLDatabase) async throws -> IntegrationTemplate {
        guard
            let row = try await sql.raw(
                "SELECT * FROM integration_templates WHERE id = \(bind: id) AND owner_id = \(bind: ownerID)"
            ).first()
        else { throw KeyhavenError.notFound }
        return try template(row)
    }

    static func requireFreeName(_ name: String, ownerID: UUID, except id: UUID?, on sql: any SQLDatabase) async throws {
        let existing = try await sql.raw(
            "SELECT id FROM integration_templates WHERE owner_id = \(bind: ownerID) AND name = \(bind: name)"
        ).first().map { try $0.decode(column: "id", as: UUID.self) }
        if let existing, existing != id {
            throw KeyhavenError.conflict("This workspace already has a template with this name.")
        }
    }

    static func entry(_ action: AuditAction, _ template: IntegrationTemplate, _ actor: AuditActor) -> AuditEntry {
        AuditEntry(
            actor: actor, action: action, ownerID: template.ownerID,
            detail: [
                "template_id": .string(template.id.lowercasedText), "name": .string(template.name),
                "type": .string(template.type.rawValue),
            ])
    }

    static func json(_ value: JSONValue) -> String { SQLAuditLog.canonicalJSON(value) }

    static func rotation(_ policy: RotationPolicy) throws -> String? {
        policy == .off ? nil : String(decoding: try JSONEncoder().encode(policy), as: UTF8.self)
    }

    static func limits(_ limits: UsageLimits?) -> String? {
        guard let limits, !limits.isEmpty else { return nil }
        var object: [String: JSONValue] = ["allow_unmetered": .bool(limits.allowsUnmeteredEndpoints)]
        if let budget = limits.monthlyBudgetMicros { object["monthly_budget_micros"] = .number(Double(budget)) }
        if let requests = limits.requestsPerMinute { object["requests_per_minute"] = .number(Double(requests)) }
        if let tokens = limits.tokensPerMinute { object["tokens_per_minute"] = .number(Double(tokens)) }
        return json(.object(object))
    }

    /// A row as a template. A row that does not decode is an error, never a default.
    ///
    /// - Throws: `KeyhavenError.internalError` for a row that does not decode.
    static func template(_ row: any SQLRow) throws -> IntegrationTemplate {
        func object(_ column: String) throws -> [String: JSONValue]? {
            guard let text = try row.decode(column: column, as: String?.self) else { return nil }
            guard case .object(let fields)? = try? JSONValue(parsing: text) else { throw KeyhavenError.internalError }
            return fields
        }
        guard let type = IntegrationType(stored: try row.decode(column: "type", as: String.self)),
            let config = try object("config"),
            case .array(let endpoints)? = try? JSONValue(
                parsing: try row.decode(column: "allowed_endpoints", as: String.self))
        else { throw KeyhavenError.internalError }
        var rotation = RotationPolicy.off
        if let text = try row.decode(column: "rotation", as: String?.self) {
            guard let policy = try? JSONDecoder().decode(RotationPolicy.self, from: Data(text.utf8)) else {
                throw KeyhavenError.internalError
            }
            rotation = policy
        }
        var limits: UsageLimits?
        if let fields = try object("limits") {
            func whole(_ name: String) -> Int64? {
                guard case .number(let value)? = fields[name], value.isFinite, abs(value) < 9e15 else { return nil }
                return Int64(value)
            }
            limits = UsageLimits(
                monthlyBudgetMicros: whole("monthly_budget_micros"), requestsPerMinute: whole("requests_per_minute"),
                tokensPerMinute: whole("tokens_per_minute"),
                allowsUnmeteredEndpoints: fields["allow_unmetered"] == .bool(true))
        }
        return IntegrationTemplate(
            id: try row.decode(column: "id", as: UUID.self), ownerID: try row.decode(column: "owner_id", as: UUID.self),
            name: try row.decode(column: "name", as: String.self), type: type,
            namePattern: try row.decode(column: "name_pattern", as: String.self), config: config, rotation: rotation,
            limits: limits, allowedEndpoints: endpoints.compactMap(\.stringValue),
            createdAt: try row.decode(column: "created_at", as: Date.self),
            updatedAt: try row.decode(column: "updated_at", as: Date.self))
    }
}
