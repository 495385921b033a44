import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices

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

    @Sendable func list(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        var values: [String: Any] = [:]
        if let done = request.uri.queryParameters["done"].map(String.init), ["deleted", "left", "pending"].contains(done) {
            values["flash"] = page.language.text("org_\(done)_flash")
        }
        return try listPage(page: page, viewer: viewer, values: values)
    }

    private func listPage(
        page: PageRequest, viewer: Viewer, values: [String: Any], status: HTTPResponse.Status = .ok
    ) throws -> Response {
        var values = values
        values["nav_orgs"] = true
        values["empty"] = viewer.organizations.isEmpty
        values["organizations"] = viewer.organizations.map { organization, role in
            [
                "id": IntegrationPages.idText(organization.id), "name": organization.name,
                "role": page.language.text("role_\(role.rawValue)"),
            ]
        }
        return renderer.page(
            "orgs", title: page.language.text("orgs_title"), values: values, language: page.language, viewer: viewer,
            path: page.path, status: status)
    }

    @Sendable func create(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        guard let name = IntegrationPages.validName(form["name"]) else {
            return try listPage(
                page: page, viewer: viewer,
                values: [
                    "errors": ["name": page.language.problem("must be a non-empty string of at most 100 visible characters")],
                    "values": ["name": form["name"] ?? ""],
                ],
                status: .unprocessableContent)
        }
        let organization = try await services.organizations.create(
            name: name, by: viewer.user.id, actor: IntegrationPages.actor(request, context: context, viewer: viewer))
        return Response.redirect(to: "/orgs/\(IntegrationPages.idText(organization.id))?done=created", type: .normal)
    }

    // MARK: An organization

    /// The organization of the path and the reader's role, if it allows `action`.
    private func organization(
        _ context: AppRequestContext, _ viewer: Viewer, _ action: Policy.Action
    ) async throws -> (id: UUID, role: WorkspaceRole) {
        let id = try UUID.path(context)
        return (id, try await services.access.require(action, in: id, for: viewer.user))
    }

    @Sendable func detail(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let (id, role) = try await organization(context, viewer, .view)
        var values: [String: Any] = [:]
        if let done = request.uri.queryParameters["done"].map(String.init), Self.flashes.contains(done) {
            values["flash"] = page.language.text("org_\(done)_flash")
        }
        return try await detailPage(id, role: role, page: page, viewer: viewer, values: values)
    }

    private func detailPage(
        _ id: UUID, role: WorkspaceRole, page: PageRequest, viewer: Viewer, values: [String: Any],
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let organization = try await services.organizations.get(id: id)
        let allows = { (action: Policy.Action) in WorkspaceAccess.allows(role, action, in: id) }
        let manageMembers = allows(.manageMembers)
        let manageOwners = allows(.manageOwners)
        let language = page.language
        let roles = WorkspaceRole.allCases.reversed().filter { manageOwners || $0 != .owner }
        var values = values
        values["nav_orgs"] = true
        values["workspace_id"] = IntegrationPages.idText(id)
        values["org"] = [
            "id": IntegrationPages.idText(id), "name": organization.name, "role": language.text("role_\(role.rawValue)"),
        ]
        values["can_manage_members"] = manageMembers
        values["can_manage_tokens"] = allows(.manageServiceTokens)
        values["can_administer"] = allows(.administer)
        values["members"] = try await services.organizations.members(of: id).map { member in
            let mine = member.userID == viewer.user.id
            // Owners are changed only by owners; anyone may leave (the last owner is refused by the store).
            let changeable = manageMembers && (manageOwners || member.role != .owner)
            return [
                "user_id": IntegrationPages.idText(member.userID), "email": member.email ?? "—",
                "role": language.text("role_\(member.role.rawValue)"), "me": mine,
                "can_change": changeable && !mine, "can_remove": changeable && !mine, "can_leave": mine,
                "pending": member.pendingConfirmation, "can_confirm": changeable && member.pendingConfirmation,
                "roles": roles.map { option in
                    [
                        "value": option.rawValue, "label": language.text("role_\(option.rawValue)"),
                        "selected": option == member.role,
                    ] as [String: Any]
                },
            ] as [String: Any]
        }
        if manageMembers {
            values["invite_roles"] = roles.map { option in
                ["value": option.rawValue, "label": language.text("role_\(option.rawValue)"), "selected": option == .member]
                    as [String: Any]
            }
            values["invitations"] = try await services.organizations.invitations(of: id, now: Date()).map { invitation in
                [
                    "id": IntegrationPages.idText(invitation.id), "email": invitation.email,
                    "role": language.text("role_\(invitation.role.rawValue)"),
                    "expires": IntegrationPages.iso(invitation.expiresAt),
                ]
            }
        }
        if allows(.manageServiceTokens) {
            values["tokens"] = try await services.tokens.serviceTokens(workspaceID: id).map { token in
                [
                    "id": IntegrationPages.idText(token.id), "name": token.name,
                    "created": language.relative(token.createdAt),
                    "last_used": token.lastUsedAt.map { language.relative($0) } ?? language.text("never"),
                    "live": token.revokedAt == nil && (token.expiresAt.map { $0 > Date() } ?? true),
                ] as [String: Any]
            }
        }
        return renderer.page(
            "org", title: organization.name, values: values, language: language, viewer: viewer, path: page.path,
            status: status)
    }

    @Sendable func rename(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, role) = try await organization(context, viewer, .administer)
        guard let name = IntegrationPages.validName(form["name"]) else {
            return try await detailPage(
                id, role: role, page: page, viewer: viewer,
                values: ["rename_error": page.language.problem("must be a non-empty string of at most 100 visible characters")],
                status: .unprocessableContent)
        }
        _ = try await services.organizations.rename(
            id: id, to: name, actor: IntegrationPages.actor(request, context: context, viewer: viewer))
        return redirect(id, "renamed")
    }

    @Sendable func delete(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, role) = try await organization(context, viewer, .administer)
        do {
            try await services.organizations.delete(
                id: id, confirmation: form["confirm_name"]?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "",
                actor: IntegrationPages.actor(request, context: context, viewer: viewer))
        } catch KeyhavenError.conflict {
            return try await detailPage(
                id, role: role, page: page, viewer: viewer,
                values: ["delete_error": page.language.text("delete_confirm_mismatch")], status: .unprocessableContent)
        }
        return Response.redirect(to: "/orgs?done=deleted", type: .normal)
    }

    @Sendable func setRole(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, role) = try await organization(context, viewer, .manageMembers)
        guard let newRole = form["role"].flatMap(WorkspaceRole.init(rawValue:)) else {
            throw KeyhavenError.badRequest("Unknown role.")
        }
        do {
            _ = try await services.organizations.setRole(
                newRole, of: try UUID.path(context, "user_id"), in: id,
                allowOwners: WorkspaceAccess.allows(role, .manageOwners, in: id),
                actor: IntegrationPages.actor(request, context: context, viewer: viewer))
        } catch KeyhavenError.conflict {
            return try await detailPage(
                id, role: role, page: page, viewer: viewer, values: ["members_error": page.language.text("last_owner")],
                status: .conflict)
        }
        return redirect(id, "role_changed")
    }

    /// Confirms a member who joined pending confirmation (SPEC §12: their account is newer than the invitation).
    @Sendable func confirmMember(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, role) = try await organization(context, viewer, .manageMembers)
        _ = try await services.organizations.confirm(
            try UUID.path(context, "user_id"), in: id, allowOwners: WorkspaceAccess.allows(role, .manageOwners, in: id),
            actor: IntegrationPages.actor(request, context: context, viewer: viewer))
        return redirect(id, "confirmed")
    }

    @Sendable func removeMember(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let userID = try UUID.path(context, "user_id")
        let leaving = userID == viewer.user.id
        let (id, role) = try await organization(context, viewer, leaving ? .view : .manageMembers)
        do {
            try await services.organizations.remove(
                userID, from: id, allowOwners: leaving || WorkspaceAccess.allows(role, .manageOwners, in: id),
                actor: IntegrationPages.actor(request, context: context, viewer: viewer))
        } catch KeyhavenError.conflict {
            return try await detailPage(
                id, role: role, page: page, viewer: viewer, values: ["members_error": page.language.text("last_owner")],
                status: .conflict)
        }
        return leaving ? Response.redirect(to: "/orgs?done=left", type: .normal) : redirect(id, "removed")
    }

    @Sendable func invite(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, role) = try await organization(context, viewer, .manageMembers)
        let email = form.trimmed("email")?.lowercased() ?? ""
        let invited = form["role"].flatMap(WorkspaceRole.init(rawValue:)) ?? .member
        if invited == .owner { try Policy.require(.user(role), .manageOwners, in: id) }
        guard Accounts.isEmail(email) else {
            return try await detailPage(
                id, role: role, page: page, viewer: viewer,
                values: ["invite_error": page.language.problem("must be an email address"), "invite_email": email],
                status: .unprocessableContent)
        }
        do {
            let (token, _) = try await services.organizations.invite(
                email: email, role: invited, to: id, actor: IntegrationPages.actor(request, context: context, viewer: viewer),
                now: Date())
            // The link carries the token in its fragment, which the browser never sends to a server.
            let link = "\(publicURL.absoluteString.trimmingSuffix("/"))/invitations/accept#\(token)"
            return try await detailPage(
                id, role: role, page: page, viewer: viewer, values: ["invitation_link": link, "invited_email": email])
        } catch KeyhavenError.conflict {
            return try await detailPage(
                id, role: role, page: page, viewer: viewer,
                values: ["invite_error": page.language.text("already_member"), "invite_email": email], status: .conflict)
        }
    }

    @Sendable func revokeInvitation(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, _) = try await organization(context, viewer, .manageMembers)
        try await services.organizations.revokeInvitation(
            id: try UUID.path(context, "invitation_id"), in: id,
            actor: IntegrationPages.actor(request, context: context, viewer: viewer))
        return redirect(id, "invitation_revoked")
    }

    @Sendable func createServiceToken(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, role) = try await organization(context, viewer, .manageServiceTokens)
        guard let name = IntegrationPages.validName(form["name"]) else {
            return try await detailPage(
                id, role: role, page: page, viewer: viewer,
                values: ["token_error": page.language.problem("must be a non-empty string of at most 100 visible characters")],
                status: .unprocessableContent)
        }
        let actor = IntegrationPages.actor(request, context: context, viewer: viewer)
        let (secret, _) = try await services.tokens.create(
            kind: .service, userID: nil, workspaceID: id, name: name, scopes: [.credentialsRead], expiresAt: nil,
            audit: AuditEntry(actor: actor, action: .tokenCreate, ownerID: id))
        return try await detailPage(id, role: role, page: page, viewer: viewer, values: ["created_token": secret])
    }

    @Sendable func revokeServiceToken(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let (id, _) = try await organization(context, viewer, .manageServiceTokens)
        let actor = IntegrationPages.actor(request, context: context, viewer: viewer)
        try await services.tokens.revokeServiceToken(
            id: try UUID.path(context, "token_id"), workspaceID: id,
            audit: AuditEntry(actor: actor, action: .tokenRevoke, ownerID: id))
        return redirect(id, "token_revoked")
    }

    // MARK: Accepting an invitation

    /// The page an invitation link opens. The token is in the link's fragment: the page's script puts it in the
    /// form (and keeps it across signing in); it can also be pasted.
    @Sendable func acceptPage(_ request: Request, context: AppRequestContext, page: PageRequest) async throws -> Response {
        renderer.page(
            "accept", title: page.language.text("accept_title"), values: [:], language: page.language,
            viewer: page.viewer, path: page.path, formToken: page.formToken)
    }

    @Sendable func accept(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let token = form.trimmed("token") ?? ""
        let refusal: String
        do {
            let (organization, member) = try await services.organizations.accept(
                token: token, user: viewer.user, actor: IntegrationPages.actor(request, context: context, viewer: viewer),
                now: Date())
            // Until an owner or admin confirms, the organization is not theirs to see.
            if member.pendingConfirmation { return Response.redirect(to: "/orgs?done=pending", type: .normal) }
            return Response.redirect(
                to: "/integrations?workspace=\(IntegrationPages.idText(organization.id))&done=joined", type: .normal)
        } catch KeyhavenError.notFound {
            refusal = page.language.text("invitation_unknown")
        } catch KeyhavenError.forbidden {
            refusal = page.language.text("invitation_other_email")
        } catch KeyhavenError.gone(let message) {
            let state = Invitation.State.allCases.first { $0.refusal == message } ?? .expired
            refusal = page.language.text("invitation_\(state.rawValue)")
        } catch KeyhavenError.conflict {
            refusal = page.language.text("invitation_already_member")
        }
        return renderer.page(
            "accept", title: page.language.text("accept_title"), values: ["error": refusal], language: page.language,
            viewer: viewer, path: page.path, status: .unprocessableContent)
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
