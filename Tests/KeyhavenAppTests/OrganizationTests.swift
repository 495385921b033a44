import Foundation
import HTTPTypes
import KeyhavenApp
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import SQLKit
import Testing

/// The users of an organization access test: one per role, an outsider, a member who was removed, and the member
/// whose role the cells change.
struct Team {
    let owner: TestUser
    let admin: TestUser
    let member: TestUser
    let viewer: TestUser
    let outsider: TestUser
    let removed: TestUser
    let target: TestUser

    init(api: APIHarness) async throws {
        owner = try await api.user()
        admin = try await api.user()
        member = try await api.user()
        viewer = try await api.user()
        outsider = try await api.user()
        removed = try await api.user()
        target = try await api.user()
    }

    /// A new organization owned by `owner`, with every other user but the outsider as a member of their role; the
    /// removed user was a member and was removed through the API.
    func organization(_ api: APIHarness, name: String = "team \(UUID().uuidString.prefix(8))") async throws -> UUID {
        let created = try await api.request(.post, "/api/orgs", auth: owner.session, json: ["name": name])
        guard created.status == .created, let text = created.json["id"] as? String, let id = UUID(uuidString: text) else {
            throw TestSetupError("organization creation failed: \(created.text)")
        }
        let roles: [(TestUser, WorkspaceRole)] = [
            (admin, .admin), (member, .member), (viewer, .viewer), (removed, .member), (target, .member),
        ]
        try await api.runtime.database.transaction { sql in
            for (user, role) in roles {
                try await sql.raw(
                    """
                    INSERT INTO memberships (id, organization_id, user_id, role, created_at, updated_at)
                    VALUES (\(bind: UUID()), \(bind: id), \(bind: user.id), \(bind: role.rawValue), \(bind: Date()), \
                    \(bind: Date()))
                    """
                ).run()
            }
        }
        let removal = try await api.request(.delete, "/api/orgs/\(id.lowercased)/members/\(removed.id.lowercased)", auth: owner.session)
        guard removal.status == .noContent else { throw TestSetupError("removal failed: \(removal.text)") }
        return id
    }
}

extension UUID {
    /// The id as the API writes it.
    var lowercased: String { uuidString.lowercased() }
}

@Suite("Organizations")
struct OrganizationTests {
    enum Caller: String, CaseIterable, CustomStringConvertible {
        case owner, admin, member, viewer, nonMember, removedMember, orgToken, otherOrgToken, unscopedToken
        var description: String { rawValue }
    }

    enum Route: String, CaseIterable {
        case listIntegrations = "GET /api/integrations?workspace_id"
        case createIntegration = "POST /api/integrations {workspace_id}"
        case getIntegration = "GET /api/integrations/{id}"
        case putIntegration = "PUT /api/integrations/{id}"
        case patchIntegration = "PATCH /api/integrations/{id}"
        case deleteIntegration = "DELETE /api/integrations/{id}"
        case testIntegration = "POST /api/integrations/{id}/test"
        case rotateIntegration = "POST /api/integrations/{id}/rotate"
        case moveIntegration = "POST /api/integrations/{id}/move"
        case credentials = "GET /api/integrations/{id}/credentials"
        case audit = "GET /api/audit?workspace_id"
        case listOrganizations = "GET /api/orgs"
        case createOrganization = "POST /api/orgs"
        case getOrganization = "GET /api/orgs/{id}"
        case renameOrganization = "PATCH /api/orgs/{id}"
        case deleteOrganization = "DELETE /api/orgs/{id}"
        case listMembers = "GET /api/orgs/{id}/members"
        case setRole = "PATCH /api/orgs/{id}/members/{user_id}"
        case removeMember = "DELETE /api/orgs/{id}/members/{user_id}"
        case listInvitations = "GET /api/orgs/{id}/invitations"
        case invite = "POST /api/orgs/{id}/invitations"
        case revokeInvitation = "DELETE /api/orgs/{id}/invitations/{invitation_id}"
        case listServiceTokens = "GET /api/orgs/{id}/service-tokens"
        case createServiceToken = "POST /api/orgs/{id}/service-tokens"
        case revokeServiceToken = "DELETE /api/orgs/{id}/service-tokens/{token_id}"
    }

    /// The expected status of every route for every caller. Service tokens may only read credentials (403 on every
    /// route for users); outsiders and removed members get what another user's object gets (404), members whose
    /// role is too low 403.
    static let expected: [Route: [Caller: Int]] = {
        let tokens: [Caller: Int] = [.orgToken: 403, .otherOrgToken: 403, .unscopedToken: 403]
        func row(owner: Int, admin: Int, member: Int, viewer: Int, outsider: Int = 404) -> [Caller: Int] {
            tokens.merging([
                .owner: owner, .admin: admin, .member: member, .viewer: viewer, .nonMember: outsider,
                .removedMember: outsider,
            ]) { $1 }
        }
        let see = row(owner: 200, admin: 200, member: 200, viewer: 200)
        let manage = row(owner: 200, admin: 200, member: 403, viewer: 403)
        return [
            .listIntegrations: see,
            .createIntegration: row(owner: 201, admin: 201, member: 201, viewer: 403, outsider: 422),
            .getIntegration: see,
            .putIntegration: row(owner: 200, admin: 200, member: 200, viewer: 403),
            .patchIntegration: row(owner: 200, admin: 200, member: 200, viewer: 403),
            .deleteIntegration: row(owner: 204, admin: 204, member: 204, viewer: 403),
            .testIntegration: row(owner: 200, admin: 200, member: 200, viewer: 403),
            // The cells' integrations are OpenAI keys, which cannot rotate: an allowed caller gets that 409.
            .rotateIntegration: row(owner: 409, admin: 409, member: 409, viewer: 403),
            .moveIntegration: row(owner: 200, admin: 200, member: 200, viewer: 403),
            .credentials: [
                .owner: 403, .admin: 403, .member: 403, .viewer: 403, .nonMember: 403, .removedMember: 403,
                .orgToken: 200, .otherOrgToken: 404, .unscopedToken: 200,
            ],
            .audit: see,
            .listOrganizations: row(owner: 200, admin: 200, member: 200, viewer: 200, outsider: 200),
            .createOrganization: row(owner: 201, admin: 201, member: 201, viewer: 201, outsider: 201),
            .getOrganization: see,
            .renameOrganization: row(owner: 200, admin: 403, member: 403, viewer: 403),
            .deleteOrganization: row(owner: 204, admin: 403, member: 403, viewer: 403),
            .listMembers: see,
            .setRole: manage,
            .removeMember: row(owner: 204, admin: 204, member: 403, viewer: 403),
            .listInvitations: manage,
            .invite: row(owner: 201, admin: 201, member: 403, viewer: 403),
            .revokeInvitation: row(owner: 204, admin: 204, member: 403, viewer: 403),
            .listServiceTokens: manage,
            .createServiceToken: row(owner: 201, admin: 201, member: 403, viewer: 403),
            .revokeServiceToken: row(owner: 204, admin: 204, member: 403, viewer: 403),
        ]
    }()

    /// The objects of one cell, all new: an organization, an integration in it, a pending invitation, a service
    /// token scoped to it.
    struct Cell {
        let organization: UUID
        let name: String
        let integration: String
        let invitation: UUID
        let serviceToken: (id: UUID, token: String)
    }

    @Test("every route answers owners, admins, members, viewers, outsiders, removed members and service tokens as the table says", arguments: TestDatabase.all)
    func roleMatrix(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let other = try await team.organization(api)
            let otherToken = try await api.runtime.tokens.create(
                kind: .service, userID: nil, workspaceID: other, name: "other", scopes: [.credentialsRead], expiresAt: nil,
                audit: AuditEntry(actor: .operator, action: .tokenCreate))
            let unscoped = try await api.serviceToken()
            var failures: [String] = []
            for route in Route.allCases {
                for caller in Caller.allCases {
                    let name = "team \(UUID().uuidString.prefix(8))"
                    let organization = try await team.organization(api, name: name)
                    let integration = try await api.runtime.integrations.create(
                        ownerID: organization, name: "shared", type: .openai, config: [:],
                        credentials: .apiKey("sk-test-\(UUID().uuidString.replacingOccurrences(of: "-", with: ""))"),
                        actor: .system)
                    let (_, invitation) = try await api.runtime.organizations.invite(
                        email: "invited-\(UUID().uuidString.prefix(8))@example.test", role: .member, to: organization,
                        actor: .system, now: Date())
                    let (token, record) = try await api.runtime.tokens.create(
                        kind: .service, userID: nil, workspaceID: organization, name: "cell", scopes: [.credentialsRead],
                        expiresAt: nil, audit: AuditEntry(actor: .operator, action: .tokenCreate))
                    let cell = Cell(
                        organization: organization, name: name, integration: integration.id.lowercased,
                        invitation: invitation.id, serviceToken: (record.id, token))
                    let (auth, user): (TestAuth, TestUser?) =
                        switch caller {
                        case .owner: (team.owner.session, team.owner)
                        case .admin: (team.admin.session, team.admin)
                        case .member: (team.member.session, team.member)
                        case .viewer: (team.viewer.session, team.viewer)
                        case .nonMember: (team.outsider.session, team.outsider)
                        case .removedMember: (team.removed.session, team.removed)
                        case .orgToken: (.bearer(token), nil)
                        case .otherOrgToken: (.bearer(otherToken.token), nil)
                        case .unscopedToken: (.bearer(unscoped.token), nil)
                        }
                    let status = try await send(route, api: api, auth: auth, user: user ?? team.owner, team: team, cell: cell)
                        .status.code
                    let want = Self.expected[route]![caller]!
                    if status != want { failures.append("\(route.rawValue) as \(caller): \(status), expected \(want)") }
                }
            }
            #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        }
    }

    func send(
        _ route: Route, api: APIHarness, auth: TestAuth, user: TestUser, team: Team, cell: Cell
    ) async throws -> APIResponse {
        let org = "/api/orgs/\(cell.organization.lowercased)"
        let integration = "/api/integrations/\(cell.integration)"
        return switch route {
        case .listIntegrations:
            try await api.request(.get, "/api/integrations?workspace_id=\(cell.organization.lowercased)", auth: auth)
        case .createIntegration:
            try await api.request(.post, "/api/integrations", auth: auth, json: [
                "name": "new", "type": "anthropic", "credentials": "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
                "workspace_id": cell.organization.lowercased,
            ])
        case .getIntegration: try await api.request(.get, integration, auth: auth)
        case .putIntegration: try await api.request(.put, integration, auth: auth, json: ["name": "renamed"])
        case .patchIntegration: try await api.request(.patch, integration, auth: auth, json: ["enabled": false])
        case .deleteIntegration: try await api.request(.delete, integration, auth: auth)
        case .testIntegration: try await api.request(.post, "\(integration)/test", auth: auth)
        case .rotateIntegration: try await api.request(.post, "\(integration)/rotate", auth: auth)
        case .moveIntegration:
            // To the caller's own workspace.
            try await api.request(.post, "\(integration)/move", auth: auth, json: ["workspace_id": user.id.lowercased])
        case .credentials: try await api.request(.get, "\(integration)/credentials", auth: auth)
        case .audit: try await api.request(.get, "/api/audit?workspace_id=\(cell.organization.lowercased)", auth: auth)
        case .listOrganizations: try await api.request(.get, "/api/orgs", auth: auth)
        case .createOrganization: try await api.request(.post, "/api/orgs", auth: auth, json: ["name": "another team"])
        case .getOrganization: try await api.request(.get, org, auth: auth)
        case .renameOrganization: try await api.request(.patch, org, auth: auth, json: ["name": "renamed team"])
        case .deleteOrganization:
            try await api.request(
                .delete, "\(org)?confirm=\(cell.name.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)",
                auth: auth)
        case .listMembers: try await api.request(.get, "\(org)/members", auth: auth)
        case .setRole:
            try await api.request(.patch, "\(org)/members/\(team.target.id.lowercased)", auth: auth, json: ["role": "viewer"])
        case .removeMember: try await api.request(.delete, "\(org)/members/\(team.target.id.lowercased)", auth: auth)
        case .listInvitations: try await api.request(.get, "\(org)/invitations", auth: auth)
        case .invite:
            try await api.request(.post, "\(org)/invitations", auth: auth, json: ["email": "new@example.test", "role": "member"])
        case .revokeInvitation: try await api.request(.delete, "\(org)/invitations/\(cell.invitation.lowercased)", auth: auth)
        case .listServiceTokens: try await api.request(.get, "\(org)/service-tokens", auth: auth)
        case .createServiceToken:
            try await api.request(.post, "\(org)/service-tokens", auth: auth, json: ["name": "backend", "scopes": ["credentials:read"]])
        case .revokeServiceToken:
            try await api.request(.delete, "\(org)/service-tokens/\(cell.serviceToken.id.lowercased)", auth: auth)
        }
    }
}
