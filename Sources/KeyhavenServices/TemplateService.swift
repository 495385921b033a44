import Foundation
import KeyhavenCore

/// A workspace's integration templates (SPEC §16): anyone who sees the workspace reads them; owners and admins, who
/// set budgets and limits, write them, since a template carries limits.
public struct TemplateService: Sendable {
    let templates: any TemplateStore
    let access: WorkspaceAccess

    /// Creates the service.
    public init(templates: any TemplateStore, access: WorkspaceAccess) {
        self.templates = templates
        self.access = access
    }

    /// The workspace's templates.
    ///
    /// - Throws: `notFound` for a workspace the caller cannot see, `forbidden` for a token without read scope.
    public func list(in workspace: UUID, by caller: UserCaller) async throws -> [IntegrationTemplate] {
        try caller.require(.integrationsRead)
        try await access.require(.view, in: workspace, for: caller.user)
        return try await templates.templates(ownerID: workspace)
    }

    /// One template of the workspace.
    ///
    /// - Throws: `notFound`, `forbidden` as ``list(in:by:)``.
    public func get(_ id: UUID, in workspace: UUID, by caller: UserCaller) async throws -> IntegrationTemplate {
        try caller.require(.integrationsRead)
        try await access.require(.view, in: workspace, for: caller.user)
        return try await templates.template(id: id, ownerID: workspace)
    }

    /// Stores the template `draft` makes, for `workspace`.
    ///
    /// - Throws: `forbidden` below admin, `notFound`, the draft's `validationFailed`, `conflict` for a taken name.
    public func create(
        in workspace: UUID, by caller: UserCaller, _ draft: (UUID) async throws -> IntegrationTemplate
    ) async throws -> IntegrationTemplate {
        try caller.require(.integrationsWrite)
        try await access.require(.manageBudgets, in: workspace, for: caller.user)
        return try await templates.create(try await Self.checked(draft(workspace)), actor: caller.actor)
    }

    /// Replaces template `id` of `workspace` with what `draft` makes of it.
    ///
    /// - Throws: as ``create(in:by:_:)``.
    public func update(
        _ id: UUID, in workspace: UUID, by caller: UserCaller,
        _ draft: (IntegrationTemplate) async throws -> IntegrationTemplate
    ) async throws -> IntegrationTemplate {
        try caller.require(.integrationsWrite)
        try await access.require(.manageBudgets, in: workspace, for: caller.user)
        let current = try await templates.template(id: id, ownerID: workspace)
        var changed = try await Self.checked(draft(current))
        changed.id = current.id
        changed.ownerID = workspace
        changed.createdAt = current.createdAt
        return try await templates.update(changed, actor: caller.actor)
    }

    /// Deletes template `id` of `workspace`.
    ///
    /// - Throws: `forbidden` below admin, `notFound`.
    public func delete(_ id: UUID, in workspace: UUID, by caller: UserCaller) async throws {
        try caller.require(.integrationsWrite)
        try await access.require(.manageBudgets, in: workspace, for: caller.user)
        try await templates.delete(id: id, ownerID: workspace, actor: caller.actor)
    }

    /// `template`, if it has no problem.
    ///
    /// - Throws: `validationFailed` naming each problem.
    static func checked(_ template: IntegrationTemplate) throws -> IntegrationTemplate {
        let problems = template.problems
        guard problems.isEmpty else { throw problems.error }
        return template
    }
}
