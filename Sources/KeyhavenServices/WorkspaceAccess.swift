import Foundation
import KeyhavenCore

/// Finds the caller's role in a workspace and asks ``Policy`` (SPEC §12): the only way routes for users decide what
/// a caller may see or change. Nothing is cached, so a removed member loses access on their next request.
public struct WorkspaceAccess: Sendable {
    let integrations: any IntegrationStore
    let organizations: any OrganizationStore

    /// Creates the access check over the stores that know integrations and memberships.
    public init(integrations: any IntegrationStore, organizations: any OrganizationStore) {
        self.integrations = integrations
        self.organizations = organizations
    }

    /// The integration `id`, if `user` may take `action` on it; read with the user's role in one query.
    ///
    /// - Throws: `KeyhavenError.notFound` if it does not exist or is in a workspace the user cannot see,
    ///   `.forbidden` if their role does not allow `action`.
    public func integration(_ id: UUID, _ action: Policy.Action, for user: User) async throws -> Integration {
        try await integrationAndRole(id, action, for: user).integration
    }

    /// As ``integration(_:_:for:)``, with the user's role in its workspace (for pages that show what it allows).
    ///
    /// - Throws: as ``integration(_:_:for:)``.
    public func integrationAndRole(
        _ id: UUID, _ action: Policy.Action, for user: User
    ) async throws -> (integration: Integration, role: WorkspaceRole) {
        let (integration, role) = try await integrations.find(id: id, for: user.id)
        try Policy.require(.user(role), action, in: integration.ownerID)
        guard let role else { throw KeyhavenError.notFound }
        return (integration, role)
    }

    /// Whether `role` allows `action` in `workspace` (for showing or hiding a control; the route decides again).
    public static func allows(_ role: WorkspaceRole, _ action: Policy.Action, in workspace: UUID) -> Bool {
        Policy.decide(.user(role), action, in: workspace) == .allowed
    }

    /// The user's role in `workspace`, if it allows `action`.
    ///
    /// - Throws: `KeyhavenError.notFound` if the user is not a member (or it does not exist), `.forbidden` if their
    ///   role does not allow `action`.
    @discardableResult
    public func require(_ action: Policy.Action, in workspace: UUID, for user: User) async throws -> WorkspaceRole {
        let role = try await organizations.role(of: user.id, in: workspace)
        try Policy.require(.user(role), action, in: workspace)
        guard let role else { throw KeyhavenError.notFound }
        return role
    }
}
