import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices
import KeyhavenWeb

/// The organizations pages (SPEC §12): the reader's organizations and a form to create one; an organization's
/// page with its members and roles, invitations (with a link to copy), service tokens, renaming and deletion; and
/// the page that accepts an invitation. Every control is shown only to a role that may use it, and every form's
/// route asks ``WorkspaceAccess`` again.
struct OrganizationPages: Sendable {
    let services: WebPages.Services
    let renderer: PageRenderer
    /// Where users reach the server (`KEYHAVEN_PUBLIC_URL`), for the invitation links they copy.
    let publicURL: URL

    static let flashes = [
        "created", "renamed", "role_changed", "removed", "left", "invitation_revoked", "token_revoked", "confirmed",
    ]

    @Sendable func list(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws
        -> Response
    {
        let flash = IntegrationPages.flash(
            request, texts: page.texts, among: ["deleted", "left", "pending"], key: { "org_\($0)_flash" })
        return listPage(page: page, viewer: viewer, flash: flash)
    }

    private func listPage(
        page: PageRequest, viewer: Viewer, flash: Notice? = nil, errors: FieldMessages = .none, name: String = "",
        status: HTTPResponse.Status = .ok
    ) -> Response {
        let view = OrganizationsPage(
            organizations: viewer.organizations.map { organization, role in
                OrganizationBadge(
                    id: IntegrationPages.idText(organization.id), name: organization.name, role: page.texts.role(role))
            },
            empty: viewer.organizations.isEmpty, flash: flash, errors: errors, values: FormValues(["name": name]))
        return renderer.page(
            "orgs", view, title: page.texts["orgs_title"], for: page, section: .organizations, status: status)
    }

    @Sendable func create(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        guard let name = IntegrationPages.validName(form["name"]) else {
            return listPage(
                page: page, viewer: viewer, errors: FieldMessages(["name": .name], texts: page.texts),
                name: form["name"] ?? "", status: .unprocessableContent)
        }
        let organization = try await services.organizations.create(by: viewer.caller(request, context)) { name }
        return Response.redirect(to: "/orgs/\(IntegrationPages.idText(organization.id))?done=created", type: .normal)
    }

    // MARK: An organization

    /// The organization of the path and the reader's role, if it allows `action` (``OrganizationService``
    /// decides, and decides again in the action itself).
    private func organization(
        _ request: Request, _ context: AppRequestContext, _ viewer: Viewer, _ action: Policy.Action
    ) async throws -> (id: UUID, role: WorkspaceRole, caller: UserCaller) {
        let caller = viewer.caller(request, context)
        let (id, role) = try await services.organizations.role(in: try UUID.path(context), action, by: caller)
        return (id, role, caller)
    }

    @Sendable func detail(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let (id, _, caller) = try await organization(request, context, viewer, .view)
        let flash = IntegrationPages.flash(request, texts: page.texts, among: Self.flashes, key: { "org_\($0)_flash" })
        return try await detailPage(
            id, caller: caller, page: page, viewer: viewer, addition: OrganizationAddition(flash: flash))
    }

    private func detailPage(
        _ id: UUID, caller: UserCaller, page: PageRequest, viewer: Viewer, addition: OrganizationAddition,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let (organization, role) = try await services.organizations.get(id, by: caller)
        let allows = { (action: Policy.Action) in WorkspaceAccess.allows(role, action, in: id) }
        let manageMembers = allows(.manageMembers)
        let manageOwners = allows(.manageOwners)
        let texts = page.texts
        let roles = WorkspaceRole.allCases.reversed().filter { manageOwners || $0 != .owner }
        let members = try await services.organizations.members(of: id, by: caller).map { member in
            MemberRow(
                member, mine: member.userID == viewer.user.id, manageMembers: manageMembers, manageOwners: manageOwners,
                roles: roles, texts: texts)
        }
        var invitations: [InvitationRow] = []
        if manageMembers {
            invitations = try await services.organizations.invitations(of: id, by: caller).map { invitation in
                InvitationRow(
                    id: IntegrationPages.idText(invitation.id), email: invitation.email,
                    role: texts.role(invitation.role), expires: IntegrationPages.iso(invitation.expiresAt))
            }
        }
        var tokens: [TokenRow] = []
        if allows(.manageServiceTokens) {
            tokens = try await services.organizations.serviceTokens(of: id, by: caller).map {
                TokenRow($0, texts: texts)
            }
        }
        let view = OrganizationPage(
            org: OrganizationBadge(id: IntegrationPages.idText(id), name: organization.name, role: texts.role(role)),
            canManageMembers: manageMembers, canManageTokens: allows(.manageServiceTokens),
            canAdminister: allows(.administer), members: members,
            inviteRoles: manageMembers
                ? roles.map { Choice(value: $0.rawValue, label: texts.role($0), selected: $0 == .member) } : [],
            invitations: invitations, tokens: tokens, addition: addition)
        return renderer.page(
            "org", view, title: organization.name, for: page, section: .organizations, workspace: id, status: status)
    }

    @Sendable func rename(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, _, caller) = try await organization(request, context, viewer, .administer)
        guard let name = IntegrationPages.validName(form["name"]) else {
            return try await detailPage(
                id, caller: caller, page: page, viewer: viewer,
                addition: OrganizationAddition(renameError: page.texts.problem(.name)), status: .unprocessableContent)
        }
        _ = try await services.organizations.rename(id, by: caller) { name }
        return redirect(id, "renamed")
    }

    @Sendable func delete(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, _, caller) = try await organization(request, context, viewer, .administer)
        do {
            try await services.organizations.delete(
                id, confirmation: form["confirm_name"]?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "",
                by: caller)
        } catch KeyhavenError.conflict {
            return try await detailPage(
                id, caller: caller, page: page, viewer: viewer,
                addition: OrganizationAddition(deleteError: page.texts["delete_confirm_mismatch"]),
                status: .unprocessableContent)
        }
        return Response.redirect(to: "/orgs?done=deleted", type: .normal)
    }

    @Sendable func setRole(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, _, caller) = try await organization(request, context, viewer, .manageMembers)
        guard let newRole = form["role"].flatMap(WorkspaceRole.init(rawValue:)) else {
            throw KeyhavenError.badRequest("Unknown role.")
        }
        do {
            _ = try await services.organizations.setRole(
                of: try UUID.path(context, "user_id"), in: id, by: caller
            ) { newRole }
        } catch KeyhavenError.conflict {
            return try await detailPage(
                id, caller: caller, page: page, viewer: viewer,
                addition: OrganizationAddition(membersError: page.texts["last_owner"]), status: .conflict)
        }
        return redirect(id, "role_changed")
    }

    /// Confirms a member who joined pending confirmation (SPEC §12: their account is newer than the invitation).
    @Sendable func confirmMember(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, _, caller) = try await organization(request, context, viewer, .manageMembers)
        _ = try await services.organizations.confirm(try UUID.path(context, "user_id"), in: id, by: caller)
        return redirect(id, "confirmed")
    }

    @Sendable func removeMember(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let userID = try UUID.path(context, "user_id")
        let leaving = userID == viewer.user.id
        let (id, _, caller) = try await organization(request, context, viewer, leaving ? .view : .manageMembers)
        do {
            try await services.organizations.remove(userID, from: id, by: caller)
        } catch KeyhavenError.conflict {
            return try await detailPage(
                id, caller: caller, page: page, viewer: viewer,
                addition: OrganizationAddition(membersError: page.texts["last_owner"]), status: .conflict)
        }
        return leaving ? Response.redirect(to: "/orgs?done=left", type: .normal) : redirect(id, "removed")
    }

    @Sendable func invite(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, _, caller) = try await organization(request, context, viewer, .manageMembers)
        let email = form.trimmed("email")?.lowercased() ?? ""
        let invited = form["role"].flatMap(WorkspaceRole.init(rawValue:)) ?? .member
        guard Accounts.isEmail(email) else {
            return try await detailPage(
                id, caller: caller, page: page, viewer: viewer,
                addition: OrganizationAddition(inviteError: page.texts.problem(.email), inviteEmail: email),
                status: .unprocessableContent)
        }
        do {
            let (token, _) = try await services.organizations.invite(to: id, by: caller) { (email, invited) }
            // The link carries the token in its fragment, which the browser never sends to a server.
            let link = "\(publicURL.absoluteString.trimmingSuffix("/"))/invitations/accept#\(token)"
            return try await detailPage(
                id, caller: caller, page: page, viewer: viewer,
                addition: OrganizationAddition(invitation: CreatedInvitation(link: link, email: email)))
        } catch KeyhavenError.conflict {
            return try await detailPage(
                id, caller: caller, page: page, viewer: viewer,
                addition: OrganizationAddition(inviteError: page.texts["already_member"], inviteEmail: email),
                status: .conflict)
        }
    }

    @Sendable func revokeInvitation(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, _, caller) = try await organization(request, context, viewer, .manageMembers)
        try await services.organizations.revokeInvitation(try UUID.path(context, "invitation_id"), in: id, by: caller)
        return redirect(id, "invitation_revoked")
    }

    @Sendable func createServiceToken(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, _, caller) = try await organization(request, context, viewer, .manageServiceTokens)
        guard let name = IntegrationPages.validName(form["name"]) else {
            return try await detailPage(
                id, caller: caller, page: page, viewer: viewer,
                addition: OrganizationAddition(tokenError: page.texts.problem(.name)), status: .unprocessableContent)
        }
        let (secret, _) = try await services.organizations.createServiceToken(in: id, by: caller) {
            NewToken(name: name, scopes: [.credentialsRead], expiresAt: nil)
        }
        return try await detailPage(
            id, caller: caller, page: page, viewer: viewer, addition: OrganizationAddition(createdToken: secret))
    }

    @Sendable func revokeServiceToken(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, _, caller) = try await organization(request, context, viewer, .manageServiceTokens)
        try await services.organizations.revokeServiceToken(try UUID.path(context, "token_id"), in: id, by: caller)
        return redirect(id, "token_revoked")
    }

    // MARK: Accepting an invitation

    /// The page an invitation link opens. The token is in the link's fragment: the page's script puts it in the
    /// form (and keeps it across signing in); it can also be pasted.
    @Sendable func acceptPage(_ request: Request, context: AppRequestContext, page: PageRequest) async throws
        -> Response
    {
        renderer.page("accept", AcceptPage(error: nil), title: page.texts["accept_title"], for: page)
    }

    @Sendable func accept(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let token = form.trimmed("token") ?? ""
        let refusal: String
        do {
            let (organization, member) = try await services.organizations.accept(by: viewer.caller(request, context)) {
                token
            }
            // Until an owner or admin confirms, the organization is not theirs to see.
            if member.pendingConfirmation { return Response.redirect(to: "/orgs?done=pending", type: .normal) }
            return Response.redirect(
                to: "/integrations?workspace=\(IntegrationPages.idText(organization.id))&done=joined", type: .normal)
        } catch KeyhavenError.notFound {
            refusal = page.texts["invitation_unknown"]
        } catch KeyhavenError.forbidden {
            refusal = page.texts["invitation_other_email"]
        } catch KeyhavenError.gone(let message) {
            let state = Invitation.State.allCases.first { $0.refusal == message } ?? .expired
            refusal = page.texts["invitation_\(state.rawValue)"]
        } catch KeyhavenError.conflict {
            refusal = page.texts["invitation_already_member"]
        }
        return renderer.page(
            "accept", AcceptPage(error: refusal), title: page.texts["accept_title"], for: page,
            status: .unprocessableContent)
    }

    private func redirect(_ id: UUID, _ done: String) -> Response {
        Response.redirect(to: "/orgs/\(IntegrationPages.idText(id))?done=\(done)", type: .normal)
    }
}

extension String {
    /// The string without one trailing `suffix`.
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
