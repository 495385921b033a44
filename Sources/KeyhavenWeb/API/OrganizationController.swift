import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices

/// Organizations, members, invitations and organization service tokens (SPEC §12). Every route asks
/// ``WorkspaceAccess``: a non-member gets 404, a member whose role is too low 403. Personal access tokens need
/// `integrations:read` to look and `integrations:write` to change; service tokens are minted only from a browser
/// session or an external JWT, as personal tokens are.
public struct OrganizationController: Sendable {
    let organizations: any OrganizationStore
    let tokens: any TokenStore
    let access: WorkspaceAccess

    /// Creates the controller.
    public init(organizations: any OrganizationStore, tokens: any TokenStore, access: WorkspaceAccess) {
        self.organizations = organizations
        self.tokens = tokens
        self.access = access
    }

    /// Adds the routes to the `/api/orgs` group and the acceptance route to the `/api/invitations` group.
    public func addRoutes(to group: RouterGroup<UserContext>, invitations: RouterGroup<UserContext>) {
        group.get(use: list)
        group.post(use: create)
        group.get(":id", use: get)
        group.patch(":id", use: rename)
        group.delete(":id", use: delete)
        group.get(":id/members", use: members)
        group.patch(":id/members/:user_id", use: setRole)
        group.delete(":id/members/:user_id", use: removeMember)
        group.post(":id/members/:user_id/confirm", use: confirmMember)
        group.get(":id/invitations", use: listInvitations)
        group.post(":id/invitations", use: invite)
        group.delete(":id/invitations/:invitation_id", use: revokeInvitation)
        group.get(":id/service-tokens", use: listServiceTokens)
        group.post(":id/service-tokens", use: createServiceToken)
        group.delete(":id/service-tokens/:token_id", use: revokeServiceToken)
        invitations.post("accept", use: accept)
    }

    /// The organization of the path, if the caller may take `action` in it; with their role.
    private func organization(
        _ action: Policy.Action, _ context: UserContext
    ) async throws -> (id: UUID, role: WorkspaceRole) {
        let id = try UUID.path(context)
        return (id, try await access.require(action, in: id, for: context.user))
    }

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        return Response.json(
            status: .ok, OrganizationListResponse(organizations: try await organizations.list(userID: context.user.id)))
    }

    @Sendable func create(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let decoded = try await OrganizationNameRequest.read(request, context: context)
        let name = try decoded.body.validated(decoded.errors).orThrow()
        let organization = try await organizations.create(name: name, by: context.user.id, actor: context.actor(request))
        return Response.json(status: .created, OrganizationResponse(organization: organization, role: .owner))
    }

    @Sendable func get(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        let (id, role) = try await organization(.view, context)
        return Response.json(
            status: .ok, OrganizationResponse(organization: try await organizations.get(id: id), role: role))
    }

    @Sendable func rename(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let (id, role) = try await organization(.administer, context)
        let decoded = try await OrganizationNameRequest.read(request, context: context)
        let name = try decoded.body.validated(decoded.errors).orThrow()
        let organization = try await organizations.rename(id: id, to: name, actor: context.actor(request))
        return Response.json(status: .ok, OrganizationResponse(organization: organization, role: role))
    }

    /// `DELETE /api/orgs/{id}?confirm=<its name>`: the name, typed again, guards against deleting the wrong one.
    @Sendable func delete(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let (id, _) = try await organization(.administer, context)
        let confirmation = request.uri.queryParameters["confirm"].map(String.init) ?? ""
        try await organizations.delete(id: id, confirmation: confirmation, actor: context.actor(request))
        return Response(status: .noContent)
    }

    @Sendable func members(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        let (id, _) = try await organization(.view, context)
        return Response.json(status: .ok, MemberListResponse(members: try await organizations.members(of: id)))
    }

    @Sendable func setRole(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let (id, role) = try await organization(.manageMembers, context)
        let userID = try UUID.path(context, "user_id")
        let decoded = try await MemberRoleRequest.read(request, context: context)
        let newRole = try decoded.body.validated(decoded.errors).orThrow()
        let member = try await organizations.setRole(
            newRole, of: userID, in: id, allowOwners: WorkspaceAccess.allows(role, .manageOwners, in: id), actor: context.actor(request))
        return Response.json(status: .ok, MemberResponse(member: member))
    }

    /// Confirms a member who joined pending confirmation (their account is newer than the invitation): a manager of
    /// members checks that it is the person they invited. Refusing is removing them.
    @Sendable func confirmMember(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let (id, role) = try await organization(.manageMembers, context)
        let member = try await organizations.confirm(
            try UUID.path(context, "user_id"), in: id, allowOwners: WorkspaceAccess.allows(role, .manageOwners, in: id),
            actor: context.actor(request))
        return Response.json(status: .ok, MemberResponse(member: member))
    }

    /// Removes a member; any member may remove themselves (leave), the last owner excepted.
    @Sendable func removeMember(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let userID = try UUID.path(context, "user_id")
        let leaving = userID == context.user.id
        let (id, role) = try await organization(leaving ? .view : .manageMembers, context)
        try await organizations.remove(
            userID, from: id, allowOwners: leaving || WorkspaceAccess.allows(role, .manageOwners, in: id), actor: context.actor(request))
        return Response(status: .noContent)
    }

    @Sendable func listInvitations(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        let (id, _) = try await organization(.manageMembers, context)
        return Response.json(
            status: .ok, InvitationListResponse(invitations: try await organizations.invitations(of: id, now: Date())))
    }

    @Sendable func invite(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let (id, role) = try await organization(.manageMembers, context)
        let decoded = try await CreateInvitationRequest.read(request, context: context)
        let (email, invited) = try decoded.body.validated(decoded.errors).orThrow()
        if invited == .owner { try Policy.require(.user(role), .manageOwners, in: id) }
        let (token, invitation) = try await organizations.invite(
            email: email, role: invited, to: id, actor: context.actor(request), now: Date())
        var response = Response.json(status: .created, CreatedInvitationResponse(invitation: invitation, token: token))
        response.headers[.cacheControl] = "no-store"
        return response
    }

    @Sendable func revokeInvitation(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let (id, _) = try await organization(.manageMembers, context)
        try await organizations.revokeInvitation(
            id: try UUID.path(context, "invitation_id"), in: id, actor: context.actor(request))
        return Response(status: .noContent)
    }

    /// `POST /api/invitations/accept`: by the signed-in user the invitation was sent to.
    @Sendable func accept(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let decoded = try await AcceptInvitationRequest.read(request, context: context)
        let token = try decoded.body.validated(decoded.errors).orThrow()
        let (organization, member) = try await organizations.accept(
            token: token, user: context.user, actor: context.actor(request), now: Date())
        return Response.json(status: .ok, AcceptedInvitationResponse(organization: organization, member: member))
    }

    @Sendable func listServiceTokens(_ request: Request, context: UserContext) async throws -> Response {
        try context.requireInteractive()
        let (id, _) = try await organization(.manageServiceTokens, context)
        return Response.json(status: .ok, TokenListResponse(tokens: try await tokens.serviceTokens(workspaceID: id)))
    }

    @Sendable func createServiceToken(_ request: Request, context: UserContext) async throws -> Response {
        try context.requireInteractive()
        let (id, _) = try await organization(.manageServiceTokens, context)
        let decoded = try await CreateTokenRequest.read(request, context: context)
        let new = try decoded.body.validated(decoded.errors, allowed: CreateTokenRequest.service).orThrow()
        let (secret, record) = try await tokens.create(
            kind: .service, userID: nil, workspaceID: id, name: new.name, scopes: new.scopes, expiresAt: new.expiresAt,
            audit: AuditEntry(actor: context.actor(request), action: .tokenCreate, ownerID: id))
        var response = Response.json(status: .created, CreatedTokenResponse(token: record, secret: secret))
        response.headers[.cacheControl] = "no-store"
        return response
    }

    @Sendable func revokeServiceToken(_ request: Request, context: UserContext) async throws -> Response {
        try context.requireInteractive()
        let (id, _) = try await organization(.manageServiceTokens, context)
        try await tokens.revokeServiceToken(
            id: try UUID.path(context, "token_id"), workspaceID: id,
            audit: AuditEntry(actor: context.actor(request), action: .tokenRevoke, ownerID: id))
        return Response(status: .noContent)
    }
}
