import Foundation
import KeyhavenCore

/// A workspace's audit events as its members may see them (SPEC §8, §12): owners and admins every event, members
/// and viewers those of its integrations.
public struct AuditService: Sendable {
    let audit: any AuditLog
    let access: WorkspaceAccess

    /// Creates the service.
    public init(audit: any AuditLog, access: WorkspaceAccess) {
        self.audit = audit
        self.access = access
    }

    /// Events of `workspace` (of one integration, if given), newest first, before sequence number `before`.
    ///
    /// - Throws: `forbidden` (scope), `notFound`, `unavailable`.
    public func events(
        in workspace: UUID, integrationID: UUID?, by caller: UserCaller, limit: Int, before: Int64?
    ) async throws -> [AuditEvent] {
        try caller.require(.integrationsRead)
        let role = try await access.require(.view, in: workspace, for: caller.user)
        let everything = WorkspaceAccess.allows(role, .viewAllAudit, in: workspace)
        return try await audit.events(
            ownerID: workspace, integrationID: integrationID, integrationsOnly: !everything, limit: limit,
            before: before)
    }
}
