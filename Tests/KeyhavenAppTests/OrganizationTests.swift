import Foundation
import HTTPTypes
import KeyhavenApp
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import SQLKit
import Testing

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
            .createIntegration: row(owner: 201, admin: 201, member: 201, viewer: 403),
            .getIntegration: see,
            .putIntegration: row(owner: 200, admin: 200, member: 200, viewer: 403),
            .patchIntegration: row(owner: 200, admin: 200, member: 200, viewer: 403),
            .deleteIntegration: row(owner: 204, admin: 204, member: 204, viewer: 403),
            .testIntegration: row(owner: 200, admin: 200, member: 200, viewer: 403),
            // The cells' integrations are OpenAI keys, which cannot rotate: an allowed caller gets that 409.
            .rotateIntegration: row(owner: 409, admin: 409, member: 409, viewer: 403),
            // Moving out takes the role that may read the credentials: a member may not.
            .moveIntegration: row(owner: 200, admin: 200, member: 403, viewer: 403),
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

    @Test(
        """
        every route answers owners, admins, members, viewers, \
        outsiders, removed members and service tokens as the table says
        """,
        arguments: TestDatabase.all)
    func roleMatrix(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let other = try await team.organization(api)
            let otherToken = try await api.runtime.tokens.create(
                kind: .service, userID: nil, workspaceID: other, name: "other", scopes: [.credentialsRead],
                expiresAt: nil,
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
                        kind: .service, userID: nil, workspaceID: organization, name: "cell",
                        scopes: [.credentialsRead],
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
                    let status = try await send(
                        route, api: api, auth: auth, user: user ?? team.owner, team: team, cell: cell
                    )
                    .status.code
                    let want = Self.expected[route]![caller]!
                    if status != want { failures.append("\(route.rawValue) as \(caller): \(status), expected \(want)") }
                }
            }
            #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        }
    }

    @Test(
        """
        an invitation accepted by an account made after it waits for an \
        owner's or admin's confirmation and grants nothing until then
        """,
        arguments: TestDatabase.all)
    func lateAccountNeedsConfirmation(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let org = try await team.organization(api)
            let base = "/api/orgs/\(org.lowercased)"
            let address = "late-\(UUID().uuidString.prefix(6).lowercased())@example.test"
            let invited = try await api.request(
                .post, "\(base)/invitations", auth: team.owner.session, json: ["email": address, "role": "admin"])
            let token = try #require(invited.json["token"] as? String)
            // Whoever registers the address after the link went out (it may have leaked) joins, pending.
            let late = try await api.user(email: address)
            let accepted = try await api.request(
                .post, "/api/invitations/accept", auth: late.session, json: ["token": token])
            #expect(accepted.status == .ok, "\(accepted.text)")
            #expect((accepted.json["member"] as? [String: Any])?["pending_confirmation"] as? Bool == true)
            let integration = try await api.runtime.integrations.create(
                ownerID: org, name: "shared", type: .openai, config: [:], credentials: .apiKey("sk-test-late-000000"),
                actor: .system)
            let denied: [(HTTPRequest.Method, String, [String: Any]?)] = [
                (.get, base, nil), (.get, "/api/integrations?workspace_id=\(org.lowercased)", nil),
                (.get, "/api/integrations/\(integration.id.lowercased)", nil),
                (.post, "\(base)/service-tokens", ["name": "mine", "scopes": ["credentials:read"]]),
                (.post, "\(base)/invitations", ["email": "friend@example.test", "role": "admin"]),
            ]
            for (method, path, body) in denied {
                let answer = try await api.request(method, path, auth: late.session, json: body)
                #expect(answer.status == .notFound, "\(method) \(path): \(answer.status)")
            }
            let listed = try await api.request(.get, "/api/orgs", auth: late.session)
            #expect(!listed.text.contains(org.lowercased), "a pending membership is not listed")
            // The members list and page show it waiting, with a button for those who manage members.
            let members = try await api.request(.get, "\(base)/members", auth: team.owner.session)
            let row = (members.json["members"] as? [[String: Any]])?.first { $0["email"] as? String == address }
            #expect(row?["pending_confirmation"] as? Bool == true)
            let page = try await api.request(
                .get, "/orgs/\(org.lowercased)", headers: [.cookie: "keyhaven_session=\(team.owner.cookie)"])
            #expect(page.text.contains("/members/\(late.id.lowercased)/confirm"))
            // A member cannot confirm; an admin may not confirm an owner; the owner confirms.
            let confirm = "\(base)/members/\(late.id.lowercased)/confirm"
            #expect(try await api.request(.post, confirm, auth: team.member.session).status == .forbidden)
            let confirmed = try await api.request(.post, confirm, auth: team.owner.session)
            #expect(confirmed.status == .ok, "\(confirmed.text)")
            #expect(confirmed.json["pending_confirmation"] as? Bool == false)
            #expect(try await api.request(.post, confirm, auth: team.owner.session).status == .notFound)
            #expect(try await api.request(.get, base, auth: late.session).status == .ok)
            // An account that existed before the invitation joins at once.
            let early = try await api.user()
            let second = try await api.request(
                .post, "\(base)/invitations", auth: team.owner.session, json: ["email": early.email, "role": "viewer"])
            let secondToken = try #require(second.json["token"] as? String)
            let joined = try await api.request(
                .post, "/api/invitations/accept", auth: early.session, json: ["token": secondToken])
            #expect((joined.json["member"] as? [String: Any])?["pending_confirmation"] as? Bool == false)
            #expect(try await api.request(.get, base, auth: early.session).status == .ok)
        }
    }

    @Test(
        """
        an invitation is accepted once by the invited email, with its \
        role; another email, an expired, withdrawn or used one is refused
        """,
        arguments: TestDatabase.all)
    func invitations(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let owner = try await api.user()
            let invited = try await api.user(email: "invited-\(UUID().uuidString.prefix(6).lowercased())@example.test")
            let stranger = try await api.user()
            let org = try #require(
                try await api.request(.post, "/api/orgs", auth: owner.session, json: ["name": "Acme"]).json["id"]
                    as? String)
            let path = "/api/orgs/\(org)/invitations"

            // The invited email arrives in another case: it still matches.
            let created = try await api.request(
                .post, path, auth: owner.session, json: ["email": invited.email.uppercased(), "role": "viewer"])
            #expect(created.status == .created)
            #expect(created.headers[.cacheControl] == "no-store")
            let token = try #require(created.json["token"] as? String)
            #expect(token.hasPrefix("kh_inv_"))
            #expect(created.json["accept_path"] as? String == "/invitations/accept#\(token)")
            let listed = try await api.request(.get, path, auth: owner.session)
            #expect(!listed.text.contains(token), "a list shows no token")
            #expect((listed.json["invitations"] as? [[String: Any]])?.first?["state"] as? String == "pending")

            func accept(_ user: TestUser, _ token: String) async throws -> APIResponse {
                try await api.request(.post, "/api/invitations/accept", auth: user.session, json: ["token": token])
            }
            let wrongEmail = try await accept(stranger, token)
            #expect(wrongEmail.status == .forbidden)
            #expect(try await api.request(.get, "/api/orgs/\(org)", auth: stranger.session).status == .notFound)
            #expect(try await accept(invited, "kh_inv_" + String(repeating: "A", count: 43)).status == .notFound)
            #expect(try await accept(invited, "not a token").status == .unprocessableContent)

            let accepted = try await accept(invited, token)
            #expect(accepted.status == .ok, "\(accepted.text)")
            #expect((accepted.json["member"] as? [String: Any])?["role"] as? String == "viewer")
            let members = try await api.request(.get, "/api/orgs/\(org)/members", auth: invited.session)
            let roles = Dictionary(
                uniqueKeysWithValues: (members.json["members"] as? [[String: Any]] ?? []).map {
                    ($0["user_id"] as? String ?? "", $0["role"] as? String ?? "")
                })
            #expect(roles == [owner.id.lowercased: "owner", invited.id.lowercased: "viewer"])
            let reused = try await accept(invited, token)
            #expect(reused.status == .gone)
            #expect(reused.text.contains("already been used"))

            // Withdrawn, and expired, for someone new.
            let later = try await api.user()
            let withdrawn = try await api.request(
                .post, path, auth: owner.session, json: ["email": later.email, "role": "member"])
            let withdrawnID = try #require((withdrawn.json["invitation"] as? [String: Any])?["id"] as? String)
            #expect(try await api.request(.delete, "\(path)/\(withdrawnID)", auth: owner.session).status == .noContent)
            let refused = try await accept(later, try #require(withdrawn.json["token"] as? String))
            #expect(refused.status == .gone && refused.text.contains("withdrawn"))
            let (expiredToken, _) = try await api.runtime.organizations.invite(
                email: later.email, role: .member, to: try #require(UUID(uuidString: org)), actor: .system,
                now: Date().addingTimeInterval(-Invitation.lifetime - 60))
            let expired = try await accept(later, expiredToken)
            #expect(expired.status == .gone && expired.text.contains("expired"))
            #expect(try await api.request(.get, "/api/orgs/\(org)", auth: later.session).status == .notFound)

            // A member's email cannot be invited again; a new invitation replaces the pending one for that email.
            #expect(
                try await api.request(
                    .post, path, auth: owner.session, json: ["email": invited.email, "role": "admin"]
                ).status == .conflict)
            let first = try await api.request(
                .post, path, auth: owner.session, json: ["email": later.email, "role": "member"])
            let second = try await api.request(
                .post, path, auth: owner.session, json: ["email": later.email, "role": "admin"])
            #expect(try await accept(later, try #require(first.json["token"] as? String)).status == .gone)
            let joined = try await accept(later, try #require(second.json["token"] as? String))
            #expect((joined.json["member"] as? [String: Any])?["role"] as? String == "admin")

            // Admins invite, but never owners.
            let asAdmin = try await api.request(
                .post, path, auth: later.session, json: ["email": "boss@example.test", "role": "owner"])
            #expect(asAdmin.status == .forbidden)
            #expect(
                try await api.request(
                    .post, path, auth: later.session, json: ["email": "new@example.test", "role": "member"]
                ).status == .created)
            // A viewer does not see the invitations at all.
            #expect(try await api.request(.get, path, auth: invited.session).status == .forbidden)

            // Invitation tokens are stored hashed: none is in the database, the log or the audit trail.
            let tokens = [token, expiredToken]
            let database = try await api.handle.dumpEverything()
            let logs = api.logs.all.map { Data($0.utf8) }
            for token in tokens {
                #expect(!containsAnywhere(Data(token.utf8), in: database + logs))
            }
        }
    }

    @Test(
        """
        a removed member's next request, by session or personal \
        token, no longer sees the organization or its integrations
        """,
        arguments: TestDatabase.all)
    func removedMember(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let org = try await team.organization(api)
            let integration = try await api.openAIIntegration(
                for: team.owner.session, name: "shared")
            let moved = try await api.request(
                .post, "/api/integrations/\(integration)/move", auth: team.owner.session,
                json: ["workspace_id": org.lowercased])
            #expect(moved.status == .ok)
            #expect(moved.json["workspace_id"] as? String == org.lowercased)
            let pat = try await api.personalToken(
                for: team.member, scopes: ["integrations:read", "integrations:write"])
            for auth in [team.member.session, TestAuth.bearer(pat.token)] {
                #expect(try await api.request(.get, "/api/integrations/\(integration)", auth: auth).status == .ok)
                let list = try await api.request(.get, "/api/integrations?workspace_id=\(org.lowercased)", auth: auth)
                #expect((list.json["integrations"] as? [[String: Any]])?.count == 1)
            }
            let orgs = try await api.request(.get, "/api/orgs", auth: .bearer(pat.token))
            #expect((orgs.json["organizations"] as? [[String: Any]])?.first?["role"] as? String == "member")

            #expect(
                try await api.request(
                    .delete, "/api/orgs/\(org.lowercased)/members/\(team.member.id.lowercased)",
                    auth: team.admin.session
                ).status == .noContent)
            for auth in [team.member.session, TestAuth.bearer(pat.token)] {
                #expect(try await api.request(.get, "/api/integrations/\(integration)", auth: auth).status == .notFound)
                #expect(
                    try await api.request(.get, "/api/integrations?workspace_id=\(org.lowercased)", auth: auth).status
                        == .notFound)
                #expect(
                    try await api.request(
                        .patch, "/api/integrations/\(integration)", auth: auth, json: ["enabled": false]
                    ).status == .notFound)
                #expect(try await api.request(.get, "/api/orgs/\(org.lowercased)", auth: auth).status == .notFound)
                #expect(
                    try await api.request(.get, "/api/audit?workspace_id=\(org.lowercased)", auth: auth).status
                        == .notFound)
            }
            let after = try await api.request(.get, "/api/orgs", auth: team.member.session)
            #expect((after.json["organizations"] as? [[String: Any]])?.isEmpty == true)
        }
    }

    @Test(
        "an organization always keeps an owner: the last one cannot leave, be removed or be demoted",
        arguments: TestDatabase.all)
    func lastOwner(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let org = try await team.organization(api)
            let members = "/api/orgs/\(org.lowercased)/members"
            let owner = "\(members)/\(team.owner.id.lowercased)"
            #expect(try await api.request(.delete, owner, auth: team.owner.session).status == .conflict)
            #expect(
                try await api.request(.patch, owner, auth: team.owner.session, json: ["role": "admin"]).status
                    == .conflict)
            // Admins do not touch owners, nor make one.
            #expect(try await api.request(.delete, owner, auth: team.admin.session).status == .forbidden)
            #expect(
                try await api.request(
                    .patch, "\(members)/\(team.member.id.lowercased)", auth: team.admin.session, json: ["role": "owner"]
                ).status == .forbidden)
            // A second owner whose account is disabled counts for nothing: the first still may not leave.
            #expect(
                try await api.request(
                    .patch, "\(members)/\(team.admin.id.lowercased)", auth: team.owner.session, json: ["role": "owner"]
                ).status == .ok)
            try await api.runtime.database.transaction { sql in
                try await sql.raw("UPDATE users SET disabled_at = \(bind: Date()) WHERE id = \(bind: team.admin.id)")
                    .run()
            }
            #expect(try await api.request(.delete, owner, auth: team.owner.session).status == .conflict)
            #expect(
                try await api.request(.patch, owner, auth: team.owner.session, json: ["role": "member"]).status
                    == .conflict)
            try await api.runtime.database.transaction { sql in
                try await sql.raw("UPDATE users SET disabled_at = NULL WHERE id = \(bind: team.admin.id)").run()
            }
            // With a second owner who can sign in, the first may step down, and then leave.
            #expect(
                try await api.request(.patch, owner, auth: team.owner.session, json: ["role": "member"]).status == .ok)
            #expect(try await api.request(.delete, owner, auth: team.owner.session).status == .noContent)
            let last = "\(members)/\(team.admin.id.lowercased)"
            #expect(try await api.request(.delete, last, auth: team.admin.session).status == .conflict)
            #expect(
                try await api.request(.patch, last, auth: team.admin.session, json: ["role": "viewer"]).status
                    == .conflict)
            // Two owners demoting each other at once: one of them stays an owner.
            #expect(
                try await api.request(
                    .patch, "\(members)/\(team.viewer.id.lowercased)", auth: team.admin.session, json: ["role": "owner"]
                ).status == .ok)
            async let first = api.request(.patch, last, auth: team.admin.session, json: ["role": "member"])
            async let second = api.request(
                .patch, "\(members)/\(team.viewer.id.lowercased)", auth: team.viewer.session, json: ["role": "member"])
            let statuses = [try await first.status, try await second.status].map(\.code).sorted()
            #expect(statuses == [200, 409], "\(statuses)")
            let roles = try await api.runtime.organizations.members(of: org).filter { $0.role == .owner }
            #expect(roles.count == 1)
        }
    }

    @Test(
        """
        deleting an organization needs its name, and deletes its \
        integrations, every secret version and its service tokens
        """,
        arguments: TestDatabase.all)
    func deleteOrganization(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let org = try await team.organization(api, name: "Acme Inc")
            let path = "/api/orgs/\(org.lowercased)"
            var ids: [String] = []
            for index in 0..<3 {
                let created = try await api.request(
                    .post, "/api/integrations", auth: team.member.session,
                    json: [
                        "name": "key \(index)", "type": "openai", "credentials": "sk-org-\(index)-abcdefghijklmnop",
                        "workspace_id": org.lowercased,
                    ])
                ids.append(try #require(created.json["id"] as? String))
            }
            let token = try await api.request(
                .post, "\(path)/service-tokens", auth: team.admin.session,
                json: ["name": "backend", "scopes": ["credentials:read"]])
            let secret = try #require(token.json["secret"] as? String)
            #expect(
                try await api.request(.get, "/api/integrations/\(ids[0])/credentials", auth: .bearer(secret)).status
                    == .ok)

            #expect(try await api.request(.delete, path, auth: team.owner.session).status == .conflict)
            #expect(
                try await api.request(.delete, "\(path)?confirm=acme%20inc", auth: team.owner.session).status
                    == .conflict)
            #expect(try await api.request(.get, "/api/integrations/\(ids[0])", auth: team.member.session).status == .ok)
            #expect(
                try await api.request(.delete, "\(path)?confirm=Acme%20Inc", auth: team.owner.session).status
                    == .noContent)

            #expect(try await api.request(.get, path, auth: team.owner.session).status == .notFound)
            for id in ids {
                #expect(
                    try await api.request(.get, "/api/integrations/\(id)", auth: team.owner.session).status == .notFound
                )
            }
            #expect(
                try await api.request(.get, "/api/integrations/\(ids[0])/credentials", auth: .bearer(secret)).status
                    == .unauthorized)
            let left = try await api.runtime.database.withConnection { sql in
                try await sql.raw("SELECT COUNT(*) AS n FROM secrets WHERE owner_id = \(bind: org)").first()?
                    .decode(column: "n", as: Int.self)
            }
            #expect(left == 0)
            let events = try await api.runtime.audit.events(ownerID: org, integrationID: nil, limit: 5, before: nil)
            #expect(events.first?.action == AuditAction.organizationDelete.rawValue)
            let verification = try await api.runtime.audit.verify()
            guard case .intact = verification else {
                Issue.record("the audit chain does not verify: \(verification)")
                return
            }
        }
    }

    @Test(
        "in an organization, owners and admins see every audit event, members and viewers those of its integrations",
        arguments: TestDatabase.all)
    func auditVisibility(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let org = try await team.organization(api)
            let created = try await api.request(
                .post, "/api/integrations", auth: team.member.session,
                json: [
                    "name": "shared", "type": "openai", "credentials": "sk-audit-abcdefghijklmnop",
                    "workspace_id": org.lowercased,
                ])
            #expect(created.status == .created)
            _ = try await api.request(
                .post, "/api/orgs/\(org.lowercased)/invitations", auth: team.admin.session,
                json: ["email": "x@example.test", "role": "viewer"])
            func actions(_ user: TestUser) async throws -> Set<String> {
                let page = try await api.request(.get, "/api/audit?workspace_id=\(org.lowercased)", auth: user.session)
                let events = page.json["events"] as? [[String: Any]] ?? []
                #expect(
                    events.allSatisfy { $0["workspace_id"] as? String == org.lowercased },
                    "events carry their workspace")
                return Set(events.compactMap { $0["action"] as? String })
            }
            let everything: Set<String> = [
                "organization.create", "organization.member.remove", "integration.create",
                "organization.invitation.create",
            ]
            for user in [team.owner, team.admin] { #expect(try await actions(user) == everything) }
            for user in [team.member, team.viewer] { #expect(try await actions(user) == ["integration.create"]) }
            // An outsider does not see the trail at all, and a member's personal trail does not show the
            // organization's events.
            #expect(
                try await api.request(.get, "/api/audit?workspace_id=\(org.lowercased)", auth: team.outsider.session)
                    .status == .notFound)
            let personal = try await api.request(.get, "/api/audit", auth: team.member.session)
            #expect((personal.json["events"] as? [[String: Any]])?.isEmpty == true)
        }
    }

    @Test(
        """
        a moved integration's credentials open in the new workspace; \
        the old ciphertext is gone, and pasted back it does not open
        """,
        arguments: TestDatabase.all)
    func move(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let org = try await team.organization(api)
            let key = "sk-move-\(UUID().uuidString.replacingOccurrences(of: "-", with: ""))"
            let id = try await api.openAIIntegration(for: team.member.session, name: "mine", key: key)
            _ = try await api.request(
                .put, "/api/integrations/\(id)", auth: team.member.session, json: ["credentials": key])
            let integrationID = try #require(UUID(uuidString: id))
            func rows() async throws -> [(owner: UUID, version: Int, ciphertext: Data, nonce: Data, dek: Data)] {
                try await api.runtime.database.withConnection { sql in
                    try await sql.raw(
                        "SELECT * FROM secrets WHERE integration_id = \(bind: integrationID) ORDER BY version"
                    ).all().map {
                        (
                            try $0.decode(column: "owner_id", as: UUID.self),
                            try $0.decode(column: "version", as: Int.self),
                            try $0.decode(column: "ciphertext", as: Data.self),
                            try $0.decode(column: "nonce", as: Data.self),
                            try $0.decode(column: "wrapped_dek", as: Data.self)
                        )
                    }
                }
            }
            let before = try await rows()
            #expect(before.count == 2)

            // Into a workspace where the caller may not add integrations: refused, nothing changes.
            let viewerOrg = try await team.organization(api)
            try await api.runtime.database.transaction { sql in
                try await sql.raw(
                    """
                    UPDATE memberships SET role = 'viewer' WHERE organization_id \
                    = \(bind: viewerOrg) AND user_id = \(bind: team.member.id)
                    """
                ).run()
            }
            #expect(
                try await api.request(
                    .post, "/api/integrations/\(id)/move", auth: team.member.session,
                    json: ["workspace_id": viewerOrg.lowercased]
                ).status == .forbidden)
            #expect(
                try await api.request(
                    .post, "/api/integrations/\(id)/move", auth: team.member.session,
                    json: ["workspace_id": team.outsider.id.lowercased]
                ).status == .notFound)
            #expect(try await rows().map(\.ciphertext) == before.map(\.ciphertext))

            let moved = try await api.request(
                .post, "/api/integrations/\(id)/move", auth: team.member.session, json: ["workspace_id": org.lowercased]
            )
            #expect(moved.status == .ok)
            #expect(moved.json["workspace_id"] as? String == org.lowercased)
            #expect(moved.json["credential_version"] as? Int == 3)
            let after = try await rows()
            #expect(after.map(\.owner) == [org] && after.map(\.version) == [3])
            let old = Set(before.map(\.ciphertext))
            #expect(after.allSatisfy { !old.contains($0.ciphertext) })
            // Nowhere in the database; on SQLite, in neither file once the log is checkpointed (until then the log
            // may still hold the pages as they were).
            try await api.runtime.database.checkpointSQLiteLog()
            let dump = try await api.handle.dumpEverything()
            for row in before {
                #expect(!containsAnywhere(row.ciphertext, in: dump), "an old ciphertext survived the move")
            }

            let service = try await api.serviceToken()
            let read = try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
            #expect(read.status == .ok)
            #expect(read.json["credentials"] as? String == key)
            // Audited on both sides.
            for workspace in [team.member.id, org] {
                let events = try await api.runtime.audit.events(
                    ownerID: workspace, integrationID: integrationID, limit: 10, before: nil)
                #expect(events.contains { $0.action == AuditAction.integrationMove.rawValue })
            }

            // The old ciphertext pasted into the new row does not open: it is bound to the old workspace.
            let old1 = before[1]
            try await api.runtime.database.transaction { sql in
                try await sql.raw(
                    """
                    UPDATE secrets SET ciphertext = \(bind: old1.ciphertext), nonce = \(bind: old1.nonce),
                    wrapped_dek = \(bind: old1.dek)
                    WHERE integration_id = \(bind: integrationID)
                    """
                ).run()
            }
            let tampered = try await api.request(
                .get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
            #expect(tampered.status == .internalServerError)
            #expect(!tampered.text.contains(key))
        }
    }

    @Test("a service token scoped to a workspace reads only that workspace's credentials", arguments: TestDatabase.all)
    func scopedServiceToken(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let org = try await team.organization(api)
            let other = try await team.organization(api)
            func create(_ workspace: UUID?) async throws -> String {
                var body: [String: Any] = [
                    "name": "k \(UUID())", "type": "openai", "credentials": "sk-scope-abcdefghijklmnop",
                ]
                if let workspace { body["workspace_id"] = workspace.lowercased }
                let created = try await api.request(.post, "/api/integrations", auth: team.owner.session, json: body)
                return try #require(created.json["id"] as? String)
            }
            let inOrg = try await create(org)
            let inOther = try await create(other)
            let personal = try await create(nil)
            let created = try await api.request(
                .post, "/api/orgs/\(org.lowercased)/service-tokens", auth: team.admin.session,
                json: ["name": "backend", "scopes": ["credentials:read"], "expires_in_days": 30])
            #expect(created.status == .created)
            #expect((created.json["token"] as? [String: Any])?["workspace_id"] as? String == org.lowercased)
            let scoped = try #require(created.json["secret"] as? String)
            #expect(scoped.hasPrefix("kh_svc_"))
            #expect(
                try await api.request(.get, "/api/integrations/\(inOrg)/credentials", auth: .bearer(scoped)).status
                    == .ok)
            for id in [inOther, personal] {
                #expect(
                    try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(scoped)).status
                        == .notFound)
            }
            // The refusal is audited in the token's workspace, not in the one it tried to read.
            let denied = try await api.runtime.audit.events(
                ownerID: org, integrationID: UUID(uuidString: inOther), limit: 5, before: nil)
            #expect(denied.first?.outcome == "denied")
            #expect(
                try await api.runtime.audit.events(
                    ownerID: other, integrationID: UUID(uuidString: inOther), limit: 5, before: nil
                )
                .allSatisfy { $0.action != AuditAction.credentialsRead.rawValue })
            // Personal tokens cannot mint service tokens; revoking one ends it.
            let pat = try await api.personalToken(for: team.owner, scopes: ["integrations:read", "integrations:write"])
            #expect(
                try await api.request(
                    .post, "/api/orgs/\(org.lowercased)/service-tokens", auth: .bearer(pat.token),
                    json: ["name": "x", "scopes": ["credentials:read"]]
                ).status == .forbidden)
            let list = try await api.request(
                .get, "/api/orgs/\(org.lowercased)/service-tokens", auth: team.owner.session)
            let tokenID = try #require(((list.json["tokens"] as? [[String: Any]])?.first)?["id"] as? String)
            #expect(
                try await api.request(
                    .delete, "/api/orgs/\(other.lowercased)/service-tokens/\(tokenID)", auth: team.owner.session
                ).status == .notFound)
            #expect(
                try await api.request(
                    .delete, "/api/orgs/\(org.lowercased)/service-tokens/\(tokenID)", auth: team.owner.session
                ).status == .noContent)
            #expect(
                try await api.request(.get, "/api/integrations/\(inOrg)/credentials", auth: .bearer(scoped)).status
                    == .unauthorized)
        }
    }

    @Test(
        """
        keyhaven tokens create-service --workspace makes a token \
        that reads only that workspace; an unknown one is refused
        """
    )
    func serviceTokenCommand() async throws {
        let binary = try KeyhavenBinary()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let key = Fixtures.masterKeyText()
        let environment = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/keyhaven.sqlite", "KEYHAVEN_MASTER_KEY": key,
        ]
        let configuration = KeyhavenConfiguration(
            database: .sqlite(path: directory.path + "/keyhaven.sqlite"),
            keyring: KeyringSource(environmentKey: try MasterKey(id: "primary", base64: key)))
        var runtime = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: true, logger: Logger(label: "test"))
        let user = try await runtime.users.create(
            email: "ops@example.test", passwordHash: APIHarness.passwordHash, audit: nil)
        let team = try await runtime.organizations.create(name: "team", by: user.id, actor: .operator)
        await runtime.shutdown()

        let created = try await binary.run(
            ["tokens", "create-service", "--name", "team", "--workspace", team.id.lowercased], environment: environment,
            in: directory.path)
        #expect(created.status == 0, "\(created.stderr)")
        let token = created.stdout.split(separator: "\n").last.map(String.init) ?? ""
        for bad in [UUID().uuidString, "not-a-workspace"] {
            let refused = try await binary.run(
                ["tokens", "create-service", "--name", "x", "--workspace", bad], environment: environment,
                in: directory.path)
            #expect(refused.status != 0 && refused.stderr.hasPrefix("keyhaven: error:"), "\(refused.stderr)")
        }
        runtime = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: false, logger: Logger(label: "test"))
        let record = try #require(try await runtime.tokens.authenticate(token: token)?.record)
        #expect(record.workspaceID == team.id && record.kind == .service && record.scopes == [.credentialsRead])
        await runtime.shutdown()
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
            try await api.request(
                .post, "/api/integrations", auth: auth,
                json: [
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
            try await api.request(
                .patch, "\(org)/members/\(team.target.id.lowercased)", auth: auth, json: ["role": "viewer"])
        case .removeMember: try await api.request(.delete, "\(org)/members/\(team.target.id.lowercased)", auth: auth)
        case .listInvitations: try await api.request(.get, "\(org)/invitations", auth: auth)
        case .invite:
            try await api.request(
                .post, "\(org)/invitations", auth: auth, json: ["email": "new@example.test", "role": "member"])
        case .revokeInvitation:
            try await api.request(.delete, "\(org)/invitations/\(cell.invitation.lowercased)", auth: auth)
        case .listServiceTokens: try await api.request(.get, "\(org)/service-tokens", auth: auth)
        case .createServiceToken:
            try await api.request(
                .post, "\(org)/service-tokens", auth: auth, json: ["name": "backend", "scopes": ["credentials:read"]])
        case .revokeServiceToken:
            try await api.request(.delete, "\(org)/service-tokens/\(cell.serviceToken.id.lowercased)", auth: auth)
        }
    }
}
