import Foundation
import HTTPTypes
import KeyhavenCore
import KeyhavenTestSupport
import KeyhavenWeb
import Testing

@testable import KeyhavenPages

/// The organization pages: what each role is shown, and that the server refuses what it is not shown.
@Suite("Organization pages")
struct OrganizationPagesTests {
    let pages = WebPagesTests()

    func get(_ api: APIHarness, _ path: String, as user: TestUser) async throws -> APIResponse {
        try await api.request(.get, path, auth: .sessionWithoutCSRF(cookie: user.cookie))
    }

    @Test(
        """
        a viewer sees the organization's integrations without edit controls \
        and the server refuses their forms; a member gets the controls
        """,
        arguments: TestDatabase.all)
    func rolesOnPages(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let org = try await team.organization(api, name: "Acme")
            let created = try await api.request(
                .post, "/api/integrations", auth: team.member.session,
                json: [
                    "name": "shared key", "type": "openai", "credentials": "sk-pages-abcdefghijklmnop",
                    "workspace_id": org.lowercased,
                ])
            let id = try #require(created.json["id"] as? String)

            // The switcher lists the organization on every page, with the reader's role.
            let home = try await get(api, "/tokens", as: team.viewer)
            #expect(home.text.contains("/integrations?workspace=\(org.lowercased)") && home.text.contains("Acme"))

            let list = try await get(api, "/integrations?workspace=\(org.lowercased)", as: team.viewer)
            #expect(list.status == .ok)
            #expect(list.text.contains("shared key"))
            #expect(!list.text.contains("/integrations/\(id)/test"), "a viewer gets no test button")
            #expect(!list.text.contains("/integrations/new"), "nor a create button")
            let detail = try await get(api, "/integrations/\(id)", as: team.viewer)
            #expect(detail.status == .ok)
            for control in ["/test", "/disable", "/credentials", "/rename", "/rotation", "/delete"] {
                #expect(!detail.text.contains("action=\"/integrations/\(id)\(control)\""), "viewer sees \(control)")
            }
            #expect(!detail.text.contains("href=\"/integrations/\(id)/delete\""))
            for action in ["test", "rename", "disable", "delete"] {
                let refused = try await pages.post(
                    api, "/integrations/\(id)/\(action)", as: team.viewer,
                    WebPagesTests.urlEncoded([
                        ("csrf_token", team.viewer.csrf), ("name", "taken"), ("confirm_name", "shared key"),
                    ]))
                #expect(refused.status == .forbidden, "\(action)")
            }
            #expect(
                try await get(api, "/integrations/new?workspace=\(org.lowercased)", as: team.viewer).status
                    == .forbidden)
            let still = try await api.request(.get, "/api/integrations/\(id)", auth: team.owner.session)
            #expect(still.json["name"] as? String == "shared key" && still.json["enabled"] as? Bool == true)

            // A member has the controls, and they work.
            let memberDetail = try await get(api, "/integrations/\(id)", as: team.member)
            #expect(memberDetail.text.contains("action=\"/integrations/\(id)/test\""))
            let tested = try await pages.post(
                api, "/integrations/\(id)/test", as: team.member,
                WebPagesTests.urlEncoded([("csrf_token", team.member.csrf)]))
            #expect(tested.status == .ok)
            let form = try await get(
                api, "/integrations/new?workspace=\(org.lowercased)&type=anthropic", as: team.member)
            #expect(form.text.contains("name=\"workspace\" value=\"\(org.lowercased)\""))
            let added = try await pages.post(
                api, "/integrations", as: team.member,
                WebPagesTests.multipart([
                    ("csrf_token", team.member.csrf), ("type", "anthropic"), ("workspace", org.lowercased),
                    ("name", "team claude"),
                    ("api_key", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"),
                ]),
                contentType: WebPagesTests.multipartType)
            #expect(added.status == .seeOther)
            #expect(added.headers[.location] == "/integrations?workspace=\(org.lowercased)&done=created")
            let listed = try await api.request(
                .get, "/api/integrations?workspace_id=\(org.lowercased)", auth: team.owner.session)
            #expect((listed.json["integrations"] as? [[String: Any]])?.count == 2)

            // Outsiders and removed members get the not-found page.
            for user in [team.outsider, team.removed] {
                #expect(try await get(api, "/integrations/\(id)", as: user).status == .notFound)
                #expect(try await get(api, "/integrations?workspace=\(org.lowercased)", as: user).status == .notFound)
                #expect(try await get(api, "/orgs/\(org.lowercased)", as: user).status == .notFound)
            }
        }
    }

    @Test(
        "the organization page shows each role what it may do; an invitation made there is accepted from its page",
        arguments: TestDatabase.all)
    func organizationPage(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let org = try await team.organization(api, name: "Acme")
            let path = "/orgs/\(org.lowercased)"
            let asViewer = try await get(api, path, as: team.viewer)
            #expect(asViewer.status == .ok && asViewer.text.contains(team.admin.email))
            #expect(
                !asViewer.text.contains("\(path)/invitations\"") && !asViewer.text.contains("\(path)/service-tokens\""))
            #expect(!asViewer.text.contains("\(path)/delete"))
            let asAdmin = try await get(api, path, as: team.admin)
            #expect(
                asAdmin.text.contains("action=\"\(path)/invitations\"")
                    && asAdmin.text.contains("action=\"\(path)/service-tokens\""))
            #expect(!asAdmin.text.contains("\(path)/delete") && !asAdmin.text.contains("<option value=\"owner\""))
            #expect(try await get(api, path, as: team.owner).text.contains("action=\"\(path)/delete\""))

            // The admin invites someone new as a viewer; the link opens the accept page, which takes the token.
            let invitee = try await api.user()
            let invited = try await pages.post(
                api, "\(path)/invitations", as: team.admin,
                WebPagesTests.urlEncoded([
                    ("csrf_token", team.admin.csrf), ("email", invitee.email), ("role", "viewer"),
                ]))
            #expect(invited.status == .ok)
            let link = try #require(
                invited.text.firstMatch(of: /value="([^"]*\/invitations\/accept#kh_inv_[A-Za-z0-9_-]{43})"/)?.1)
            let token = String(link.split(separator: "#").last ?? "")
            let acceptPage = try await get(api, "/invitations/accept", as: invitee)
            #expect(acceptPage.status == .ok && acceptPage.text.contains("id=\"invitation-token\""))
            let wrong = try await pages.post(
                api, "/invitations/accept", as: team.outsider,
                WebPagesTests.urlEncoded([("csrf_token", team.outsider.csrf), ("token", token)]))
            #expect(wrong.status == .unprocessableContent)
            #expect(wrong.text.contains("Esta invitación es para otro correo."))
            let accepted = try await pages.post(
                api, "/invitations/accept", as: invitee,
                WebPagesTests.urlEncoded([("csrf_token", invitee.csrf), ("token", token)]))
            #expect(accepted.status == .seeOther)
            #expect(accepted.headers[.location] == "/integrations?workspace=\(org.lowercased)&done=joined")
            let members = try await api.runtime.organizations.members(of: org)
            #expect(members.first { $0.userID == invitee.id }?.role == .viewer)
            let again = try await pages.post(
                api, "/invitations/accept", as: invitee,
                WebPagesTests.urlEncoded([("csrf_token", invitee.csrf), ("token", token)]))
            #expect(again.status == .unprocessableContent)
            #expect(again.text.contains("Esta invitación ya se usó."), "the page names why, in the reader's language")

            // Roles change from the page; the last owner is kept.
            let promoted = try await pages.post(
                api, "\(path)/members/\(invitee.id.lowercased)/role", as: team.admin,
                WebPagesTests.urlEncoded([("csrf_token", team.admin.csrf), ("role", "member")]))
            #expect(promoted.status == .seeOther)
            #expect(
                try await api.runtime.organizations.members(of: org).first { $0.userID == invitee.id }?.role == .member)
            let demoteOwner = try await pages.post(
                api, "\(path)/members/\(team.owner.id.lowercased)/role", as: team.owner,
                WebPagesTests.urlEncoded([("csrf_token", team.owner.csrf), ("role", "admin")]))
            #expect(demoteOwner.status == .conflict)
            // The invitation token is nowhere in the server's log.
            #expect(!api.logs.all.contains { $0.contains(token) })
        }
    }
}
