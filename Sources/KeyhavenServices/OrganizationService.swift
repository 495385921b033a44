import Foundation
import KeyhavenCore

/// Organizations, members, invitations and organization service tokens (SPEC §12), for the JSON API and the pages
/// alike. Every method checks the caller's token scope (personal access tokens need `integrations:read` to look and
/// `integrations:write` to change; service tokens are managed only from a browser session or an external JWT), then
/// asks ``WorkspaceAccess`` for their role: a non-member gets `notFound`, a member whose role is too low
/// `forbidden`. A body is read (`input`) only once those checks have passed.
public struct OrganizationService: Sendable {
    let organizations: any OrganizationStore
    let tokens: any TokenStore
    let access: WorkspaceAccess

    /// Creates the service.
    public init(organizations: any OrganizationStore, tokens: any TokenStore, access: WorkspaceAccess) {
        self.organizations = organizations
        self.tokens = tokens
        self.access = access
    }

    /// The organization `id` (read once the scope has been checked, so a caller without it is told so whatever the
    /// id) and the caller's role in it, if it allows `action`; `scope` is the personal access token scope asked for,
    /// nil for an action only a browser session or an external JWT may take.
    ///
    /// - Throws: `forbidden`, `notFound`, what `id` throws.
    @discardableResult
    public func role(
        in id: @autoclosure () throws -> UUID, _ action: Policy.Action, by caller: UserCaller,
        scope: TokenScope? = .integrationsWrite
    ) async throws -> (id: UUID, role: WorkspaceRole) {
        if let scope { try caller.require(scope) } else { try caller.requireInteractive() }
        let id = try id()
        return (id, try await access.require(action, in: id, for: caller.user))
    }

    /// The caller's organizations with their role.
    ///
    /// - Throws: `forbidden` (scope), `unavailable`.
    public func list(by caller: UserCaller) async throws -> [(Organization, WorkspaceRole)] {
        try caller.require(.integrationsRead)
        return try await organizations.list(userID: caller.user.id)
    }

    /// Creates an organization with the caller as its owner.
    ///
    /// - Throws: `forbidden` (scope), what `name` throws, `unavailable`.
    public func create(by caller: UserCaller, name: () async throws -> String) async throws -> Organization {
        try caller.require(.integrationsWrite)
        return try await organizations.create(name: try await name(), by: caller.user.id, actor: caller.actor)
    }

    /// The organization and the caller's role in it.
    ///
    /// - Throws: `forbidden`, `notFound`.
    public func get(
        _ id: @autoclosure () throws -> UUID, by caller: UserCaller
    ) async throws -> (Organization, WorkspaceRole) {
        let (id, role) = try await role(in: try id(), .view, by: caller, scope: .integrationsRead)
        return (try await organizations.get(id: id), role)
    }

    /// Renames the organization (owners).
    ///
    /// - Throws: `forbidden`, `notFound`, what `name` throws.
    public func rename(
        _ id: @autoclosure () throws -> UUID, by caller: UserCaller, to name: () async throws -> String
    ) async throws -> (Organization, WorkspaceRole) {
        let (id, role) = try await role(in: try id(), .administer, by: caller)
        return (try await organizations.rename(id: id, to: try await name(), actor: caller.actor), role)
    }

    /// Deletes the organization (owners); `confirmation` must be its name, typed again.
    ///
    /// - Throws: `forbidden`, `notFound`, `validationFailed` for a wrong confirmation.
    public func delete(
        _ id: @autoclosure () throws -> UUID, confirmation: String, by caller: UserCaller
    ) async throws {
        let (id, _) = try await role(in: try id(), .administer, by: caller)
        try await organizations.delete(id: id, confirmation: confirmation, actor: caller.actor)
    }

    /// The organization's members.
    ///
    /// - Throws: `forbidden`, `notFound`.
    public func members(of id: @autoclosure () throws -> UUID, by caller: UserCaller) async throws -> [Member] {
        let (id, _) = try await role(in: try id(), .view, by: caller, scope: .integrationsRead)
        return try await organizations.members(of: id)
    }

    /// Gives member `userID` a new role; only owners make, unmake or change owners.
    ///
    /// - Throws: `forbidden`, `notFound`, what `newRole` throws, `conflict` (the last owner).
    public func setRole(
        of userID: @autoclosure () throws -> UUID, in id: @autoclosure () throws -> UUID, by caller: UserCaller,
        to newRole: () async throws -> WorkspaceRole
    ) async throws -> Member {
        let (id, role) = try await role(in: try id(), .manageMembers, by: caller)
        let userID = try userID()
        return try await organizations.setRole(
            try await newRole(), of: userID, in: id, allowOwners: WorkspaceAccess.allows(role, .manageOwners, in: id),
            actor: caller.actor)
    }

    /// Confirms a member who joined pending confirmation (their account is newer than the invitation).
    ///
    /// - Throws: `forbidden`, `notFound`.
    public func confirm(
        _ userID: @autoclosure () throws -> UUID, in id: @autoclosure () throws -> UUID, by caller: UserCaller
    ) async throws -> Member {
        let (id, role) = try await role(in: try id(), .manageMembers, by: caller)
        return try await organizations.confirm(
            try userID(), in: id, allowOwners: WorkspaceAccess.allows(role, .manageOwners, in: id), actor: caller.actor)
    }

    /// Removes a member; any member may remove themselves (leave), the last owner excepted.
    ///
    /// - Throws: `forbidden`, `notFound`, `conflict` (the last owner).
    public func remove(
        _ userID: @autoclosure () throws -> UUID, from id: @autoclosure () throws -> UUID, by caller: UserCaller
    ) async throws {
        try caller.require(.integrationsWrite)
        let userID = try userID()
        let leaving = userID == caller.user.id
        let (id, role) = try await role(in: try id(), leaving ? .view : .manageMembers, by: caller)
        try await organizations.remove(
            userID, from: id, allowOwners: leaving || WorkspaceAccess.allows(role, .manageOwners, in: id),
            actor: caller.actor)
    }

    /// The organization's open invitations.
    ///
    /// - Throws: `forbidden`, `notFound`.
    public func invitations(
        of id: @autoclosure () throws -> UUID, by caller: UserCaller
    ) async throws -> [Invitation] {
        let (id, _) = try await role(in: try id(), .manageMembers, by: caller, scope: .integrationsRead)
        return try await organizations.invitations(of: id, now: Date())
    }

    /// Invites an address with a role (an owner only by an owner); the token is shown once.
    ///
    /// - Throws: `forbidden`, `notFound`, what `invitation` throws, `conflict`.
    public func invite(
        to id: @autoclosure () throws -> UUID, by caller: UserCaller,
        _ invitation: () async throws -> (email: String, role: WorkspaceRole)
    ) async throws -> (token: String, invitation: Invitation) {
        let (id, role) = try await role(in: try id(), .manageMembers, by: caller)
        let (email, invited) = try await invitation()
        if invited == .owner { try Policy.require(.user(role), .manageOwners, in: id) }
        return try await organizations.invite(email: email, role: invited, to: id, actor: caller.actor, now: Date())
    }

    /// Revokes an open invitation.
    ///
    /// - Throws: `forbidden`, `notFound`.
    public func revokeInvitation(
        _ invitationID: @autoclosure () throws -> UUID, in id: @autoclosure () throws -> UUID, by caller: UserCaller
    ) async throws {
        let (id, _) = try await role(in: try id(), .manageMembers, by: caller)
        try await organizations.revokeInvitation(id: try invitationID(), in: id, actor: caller.actor)
    }

    /// Accepts an invitation sent to the caller's address.
    ///
    /// - Throws: `forbidden` (scope), what `token` throws, `notFound`, `conflict`.
    public func accept(
        by caller: UserCaller, token: () async throws -> String
    ) async throws -> (Organization, Member) {
        try caller.require(.integrationsWrite)
        return try await organizations.accept(
            token: try await token(), user: caller.user, actor: caller.actor, now: Date())
    }

    /// The organization's service tokens.
    ///
    /// - Throws: `forbidden`, `notFound`.
    public func serviceTokens(
        of id: @autoclosure () throws -> UUID, by caller: UserCaller
    ) async throws -> [APIToken] {
        let (id, _) = try await role(in: try id(), .manageServiceTokens, by: caller, scope: nil)
        return try await tokens.serviceTokens(workspaceID: id)
    }

    /// Mints a service token for the organization; its secret is shown once.
    ///
    /// - Throws: `forbidden`, `notFound`, what `token` throws.
    public func createServiceToken(
        in id: @autoclosure () throws -> UUID, by caller: UserCaller, _ token: () async throws -> NewToken
    ) async throws -> (token: String, record: APIToken) {
        let (id, _) = try await role(in: try id(), .manageServiceTokens, by: caller, scope: nil)
        let new = try await token()
        return try await tokens.create(
            kind: .service, userID: nil, workspaceID: id, name: new.name, scopes: new.scopes, expiresAt: new.expiresAt,
            audit: AuditEntry(actor: caller.actor, action: .tokenCreate, ownerID: id))
    }

    /// Revokes one of the organization's service tokens.
    ///
    /// - Throws: `forbidden`, `notFound`.
    public func revokeServiceToken(
        _ tokenID: @autoclosure () throws -> UUID, in id: @autoclosure () throws -> UUID, by caller: UserCaller
    ) async throws {
        let (id, _) = try await role(in: try id(), .manageServiceTokens, by: caller, scope: nil)
        try await tokens.revokeServiceToken(
            id: try tokenID(), workspaceID: id,
            audit: AuditEntry(actor: caller.actor, action: .tokenRevoke, ownerID: id))
    }
}
