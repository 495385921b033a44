import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices

/// Organizations, members, invitations and organization service tokens (SPEC §12). Every route asks
/// ``WorkspaceAccess``: a non-member gets 404, a member whose role is too low 403. Personal access tokens need
/// `integrations:read` to look and `integrations:write` to change; service tokens are minted only from a browser
/// session or an external JWT, as personal tokens are.
public struct OrganizationController: Sendable {
    let service: OrganizationService

    /// Creates the controller.
    public init(service: OrganizationService) {
        self.service = service
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

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        Response.json(
            status: .ok, OrganizationListResponse(organizations: try await service.list(by: context.caller(request))))
    }

    @Sendable func create(_ request: Request, context: UserContext) async throws -> Response {
        let organization = try await service.create(by: context.caller(request)) {
            let decoded = try await OrganizationNameRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors).orThrow()
        }
        return Response.json(status: .created, OrganizationResponse(organization: organization, role: .owner))
    }

    @Sendable func get(_ request: Request, context: UserContext) async throws -> Response {
        let (organization, role) = try await service.get(try UUID.path(context), by: context.caller(request))
        return Response.json(status: .ok, OrganizationResponse(organization: organization, role: role))
    }

    @Sendable func rename(_ request: Request, context: UserContext) async throws -> Response {
        let (organization, role) = try await service.rename(try UUID.path(context), by: context.caller(request)) {
            let decoded = try await OrganizationNameRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors).orThrow()
        }
        return Response.json(status: .ok, OrganizationResponse(organization: organization, role: role))
    }

    /// `DELETE /api/orgs/{id}?confirm=<its name>`: the name, typed again, guards against deleting the wrong one.
    @Sendable func delete(_ request: Request, context: UserContext) async throws -> Response {
        try await service.delete(
            try UUID.path(context), confirmation: request.uri.queryParameters["confirm"].map(String.init) ?? "",
            by: context.caller(request))
        return Response(status: .noContent)
    }

    @Sendable func members(_ request: Request, context: UserContext) async throws -> Response {
        let members = try await service.members(of: try UUID.path(context), by: context.caller(request))
        return Response.json(status: .ok, MemberListResponse(members: members))
    }

    @Sendable func setRole(_ request: Request, context: UserContext) async throws -> Response {
        let member = try await service.setRole(
            of: try UUID.path(context, "user_id"), in: try UUID.path(context), by: context.caller(request)
        ) {
            let decoded = try await MemberRoleRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors).orThrow()
        }
        return Response.json(status: .ok, MemberResponse(member: member))
    }

    /// Confirms a member who joined pending confirmation (their account is newer than the invitation): a manager of
    /// members checks that it is the person they invited. Refusing is removing them.
    @Sendable func confirmMember(_ request: Request, context: UserContext) async throws -> Response {
        let member = try await service.confirm(
            try UUID.path(context, "user_id"), in: try UUID.path(context), by: context.caller(request))
        return Response.json(status: .ok, MemberResponse(member: member))
    }

    /// Removes a member; any member may remove themselves (leave), the last owner excepted.
    @Sendable func removeMember(_ request: Request, context: UserContext) async throws -> Response {
        try await service.remove(
            try UUID.path(context, "user_id"), from: try UUID.path(context), by: context.caller(request))
        return Response(status: .noContent)
    }

    @Sendable func listInvitations(_ request: Request, context: UserContext) async throws -> Response {
        let invitations = try await service.invitations(of: try UUID.path(context), by: context.caller(request))
        return Response.json(status: .ok, InvitationListResponse(invitations: invitations))
    }

    @Sendable func invite(_ request: Request, context: UserContext) async throws -> Response {
        let (token, invitation) = try await service.invite(to: try UUID.path(context), by: context.caller(request)) {
            let decoded = try await CreateInvitationRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors).orThrow()
        }
        var response = Response.json(status: .created, CreatedInvitationResponse(invitation: invitation, token: token))
        response.headers[.cacheControl] = "no-store"
        return response
    }

    @Sendable func revokeInvitation(_ request: Request, context: UserContext) async throws -> Response {
        try await service.revokeInvitation(
            try UUID.path(context, "invitation_id"), in: try UUID.path(context), by: context.caller(request))
        return Response(status: .noContent)
    }

    /// `POST /api/invitations/accept`: by the signed-in user the invitation was sent to.
    @Sendable func accept(_ request: Request, context: UserContext) async throws -> Response {
        let (organization, member) = try await service.accept(by: context.caller(request)) {
            let decoded = try await AcceptInvitationRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors).orThrow()
        }
        return Response.json(status: .ok, AcceptedInvitationResponse(organization: organization, member: member))
    }

    @Sendable func listServiceTokens(_ request: Request, context: UserContext) async throws -> Response {
        let tokens = try await service.serviceTokens(of: try UUID.path(context), by: context.caller(request))
        return Response.json(status: .ok, TokenListResponse(tokens: tokens))
    }

    @Sendable func createServiceToken(_ request: Request, context: UserContext) async throws -> Response {
        let (secret, record) = try await service.createServiceToken(
            in: try UUID.path(context), by: context.caller(request)
        ) {
            let decoded = try await CreateTokenRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors, allowed: CreateTokenRequest.service).orThrow()
        }
        var response = Response.json(status: .created, CreatedTokenResponse(token: record, secret: secret))
        response.headers[.cacheControl] = "no-store"
        return response
    }

    @Sendable func revokeServiceToken(_ request: Request, context: UserContext) async throws -> Response {
        try await service.revokeServiceToken(
            try UUID.path(context, "token_id"), in: try UUID.path(context), by: context.caller(request))
        return Response(status: .noContent)
    }
}
