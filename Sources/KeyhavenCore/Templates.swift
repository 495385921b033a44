import Foundation

/// A workspace's preset for new integrations (SPEC §16): a provider with its settings, a rotation policy, limits and
/// the gateway endpoints its integrations may use. An integration created from one records which.
public struct IntegrationTemplate: Sendable, Equatable {
    public var id: UUID
    /// The workspace it belongs to.
    public var ownerID: UUID
    /// Unique in the workspace.
    public var name: String
    public var type: IntegrationType
    /// The name of an integration made from it; `{n}` stands for the first number that makes the name free.
    public var namePattern: String
    /// The integration's non-secret settings (checked as an integration's are).
    public var config: [String: JSONValue]
    public var rotation: RotationPolicy
    /// The limits an integration made from it starts with; nil for none.
    public var limits: UsageLimits?
    /// The gateway paths (path rules, as in the catalog) its integrations may be called on; empty for any.
    public var allowedEndpoints: [String]
    public var createdAt: Date
    public var updatedAt: Date

    /// Creates a template value.
    public init(
        id: UUID = .timeOrdered(), ownerID: UUID, name: String, type: IntegrationType, namePattern: String,
        config: [String: JSONValue] = [:], rotation: RotationPolicy = .off, limits: UsageLimits? = nil,
        allowedEndpoints: [String] = [], createdAt: Date = Date(), updatedAt: Date = Date()
    ) {
        self.id = id
        self.ownerID = ownerID
        self.name = name
        self.type = type
        self.namePattern = namePattern
        self.config = config
        self.rotation = rotation
        self.limits = limits
        self.allowedEndpoints = allowedEndpoints
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    /// The name of the next integration made from it, given the names the workspace already has: `namePattern` with
    /// `{n}` replaced by the first number from 1 not taken (the pattern itself when it has no `{n}`).
    public func integrationName(taken: Set<String>) -> String {
        guard namePattern.contains("{n}") else { return namePattern }
        var number = 1
        while number < 100_000 {
            let name = namePattern.replacingOccurrences(of: "{n}", with: String(number))
            if !taken.contains(name) { return name }
            number += 1
        }
        return namePattern.replacingOccurrences(of: "{n}", with: UUID().uuidString.prefix(8).lowercased())
    }

    /// The problems of the template's own fields (its settings are checked as an integration's), by field.
    public var problems: FieldErrors {
        var errors = FieldErrors()
        if type.entry == nil {
            errors.add(FieldProblem(.invalid, "is not a provider this server knows"), to: "type")
            return errors
        }
        let pattern = namePattern.trimmingCharacters(in: .whitespaces)
        if pattern.isEmpty || pattern.count > 90 || pattern.unicodeScalars.contains(where: { $0.value < 0x20 }) {
            errors.add(FieldProblem(.name, "must be 1 to 90 characters without control characters"), to: "name_pattern")
        }
        for (index, path) in allowedEndpoints.enumerated() where (try? PathPattern(path)) == nil {
            errors.add(
                FieldProblem(.invalid, "must be a provider path rule like /v1/chat/completions"),
                to: "allowed_endpoints[\(index)]")
        }
        if allowedEndpoints.count > 20 {
            errors.add(FieldProblem(.tooLong, "may list at most 20 paths"), to: "allowed_endpoints")
        }
        for (field, problem) in CredentialValidator.validateConfig(type: type, config).all {
            errors.add(problem, to: field)
        }
        for (field, problem) in rotation.problems(for: type).all { errors.add(problem, to: field) }
        return errors
    }
}

/// Templates, per workspace; every change is audited in the same transaction.
public protocol TemplateStore: Sendable {
    /// The workspace's templates, by name.
    func templates(ownerID: UUID) async throws -> [IntegrationTemplate]

    /// One template of the workspace.
    ///
    /// - Throws: `KeyhavenError.notFound` when the workspace has no such template.
    func template(id: UUID, ownerID: UUID) async throws -> IntegrationTemplate

    /// Stores a new template.
    ///
    /// - Throws: `KeyhavenError.conflict` when the workspace has a template of that name.
    func create(_ template: IntegrationTemplate, actor: AuditActor) async throws -> IntegrationTemplate

    /// Replaces a template's fields.
    ///
    /// - Throws: `KeyhavenError.notFound`, or `conflict` for a name another template of the workspace has.
    func update(_ template: IntegrationTemplate, actor: AuditActor) async throws -> IntegrationTemplate

    /// Deletes a template; integrations made from it keep their settings and forget it.
    ///
    /// - Throws: `KeyhavenError.notFound`.
    func delete(id: UUID, ownerID: UUID, actor: AuditActor) async throws
}
