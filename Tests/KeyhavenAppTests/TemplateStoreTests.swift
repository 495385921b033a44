import Foundation
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import SQLKit
import Testing

/// Integration templates as stored (SPEC §16): per workspace, audited, and checked before they are kept.
@Suite("Integration templates, stored")
struct TemplateStoreTests {
    @Test(
        """
        a workspace's templates round-trip with their settings, rotation, limits and endpoints; names are unique per \\
        workspace; another workspace's template is not found; every change is audited; deleting one leaves the \\
        integrations made from it
        """, arguments: TestDatabase.all)
    func stored(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let store = SQLTemplateStore(database: api.handle.database, audit: api.runtime.audit)
            let user = try await api.user()
            let other = try await api.user()
            let actor = AuditActor(kind: .user, id: user.id.lowercasedText)
            let budgeted = IntegrationTemplate(
                ownerID: user.id, name: "OpenAI production", type: .openai, namePattern: "OpenAI prod {n}",
                config: ["organization": "org-team"],
                rotation: RotationPolicy(mode: .remind, everyDays: 30, graceHours: 24),
                limits: UsageLimits(monthlyBudgetMicros: 50_000_000, requestsPerMinute: 600),
                allowedEndpoints: ["/v1/chat/completions", "/v1/embeddings"])
            let created = try await store.create(budgeted, actor: actor)
            #expect(created.config == budgeted.config && created.rotation == budgeted.rotation)
            #expect(created.limits == budgeted.limits && created.allowedEndpoints == budgeted.allowedEndpoints)
            let plain = try await store.create(
                IntegrationTemplate(ownerID: user.id, name: "Anthropic", type: .anthropic, namePattern: "Claude"),
                actor: actor)
            #expect(plain.limits == nil && plain.rotation == .off)
            #expect(try await store.templates(ownerID: user.id).map(\.name) == ["Anthropic", "OpenAI production"])
            #expect(try await store.templates(ownerID: other.id).isEmpty)

            await #expect(throws: KeyhavenError.self) {
                _ = try await store.create(
                    IntegrationTemplate(ownerID: user.id, name: "Anthropic", type: .gemini, namePattern: "x"),
                    actor: actor)
            }
            var renamed = plain
            renamed.name = "OpenAI production"
            await #expect(throws: KeyhavenError.self) { _ = try await store.update(renamed, actor: actor) }
            renamed.name = "Claude team"
            #expect(try await store.update(renamed, actor: actor).name == "Claude team")
            await #expect(throws: KeyhavenError.notFound) {
                _ = try await store.template(id: plain.id, ownerID: other.id)
            }
            var stolen = plain
            stolen.ownerID = other.id
            await #expect(throws: KeyhavenError.notFound) {
                _ = try await store.update(stolen, actor: AuditActor(kind: .user, id: other.id.lowercasedText))
            }

            // An integration made from a template forgets it when the template goes.
            let integration = try await api.openAIIntegration(for: user.session)
            let row = UUID(uuidString: integration)
            try await api.handle.database.transaction { sql in
                try await sql.raw("UPDATE integrations SET template_id = \(bind: created.id) WHERE id = \(bind: row)")
                    .run()
            }
            await #expect(throws: KeyhavenError.notFound) {
                try await store.delete(
                    id: created.id, ownerID: other.id, actor: AuditActor(kind: .user, id: other.id.lowercasedText))
            }
            try await store.delete(id: created.id, ownerID: user.id, actor: actor)
            await #expect(throws: KeyhavenError.notFound) {
                _ = try await store.template(id: created.id, ownerID: user.id)
            }
            let kept = try await api.handle.database.withConnection { sql in
                try await sql.raw(
                    "SELECT template_id FROM integrations WHERE id = \(bind: UUID(uuidString: integration))"
                )
                .first()?.decode(column: "template_id", as: UUID?.self)
            }
            #expect(kept == nil)
            let actions = try await api.handle.database.withConnection { sql in
                try await sql.raw("SELECT action FROM audit_events WHERE action LIKE 'template.%' ORDER BY seq").all()
                    .map { try $0.decode(column: "action", as: String.self) }
            }
            #expect(actions == ["template.create", "template.create", "template.update", "template.delete"])
        }
    }

    @Test("a template is checked as an integration's settings are, and names the next integration")
    func checked() {
        let owner = UUID()
        #expect(
            IntegrationTemplate(ownerID: owner, name: "a", type: .openai, namePattern: "OpenAI {n}").problems.isEmpty)
        let bad = IntegrationTemplate(
            ownerID: owner, name: "a", type: .openai, namePattern: " ", config: ["organization": "not-an-org"],
            rotation: RotationPolicy(mode: .automatic, everyDays: 30, graceHours: 24), allowedEndpoints: ["v1/../x"])
        #expect(
            Set(bad.problems.all.keys)
                == ["name_pattern", "config.organization", "rotation.mode", "allowed_endpoints[0]"])
        let unknown = IntegrationTemplate(
            ownerID: owner, name: "a", type: IntegrationType(stored: "retired_provider")!, namePattern: "x")
        #expect(Set(unknown.problems.all.keys) == ["type"])
        let pattern = IntegrationTemplate(ownerID: owner, name: "a", type: .openai, namePattern: "OpenAI {n}")
        #expect(pattern.integrationName(taken: []) == "OpenAI 1")
        #expect(pattern.integrationName(taken: ["OpenAI 1", "OpenAI 2"]) == "OpenAI 3")
        #expect(
            IntegrationTemplate(ownerID: owner, name: "a", type: .openai, namePattern: "Fixed").integrationName(
                taken: ["Fixed"]) == "Fixed")
    }
}

/// `/api/templates` (SPEC §16): owners and admins write a workspace's templates, everyone who sees it reads them.
@Suite("Integration templates API")
struct TemplateAPITests {
    static var body: [String: Any] {
        [
            "name": "OpenAI production", "type": "openai", "name_pattern": "OpenAI prod {n}",
            "config": ["organization": "org-team"], "rotation": ["mode": "remind", "every_days": 30],
            "limits": ["monthly_budget_usd": 50, "requests_per_minute": 600],
            "allowed_endpoints": ["/v1/chat/completions"],
        ]
    }

    @Test(
        """
        an admin saves, reads, replaces and deletes a template; members and viewers read it; a member cannot write \\
        (403), an outsider or a removed member does not find it (404); a bad template is a 422 naming each field
        """, arguments: TestDatabase.all)
    func lifecycle(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let team = try await Team(api: api)
            let org = try await team.organization(api).lowercased
            let path = "/api/templates?workspace_id=\(org)"
            let created = try await api.request(.post, path, auth: team.admin.session, json: Self.body)
            #expect(created.status == .created, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            #expect((created.json["limits"] as? [String: Any])?["monthly_budget_usd"] as? Double == 50)
            #expect((created.json["rotation"] as? [String: Any])?["mode"] as? String == "remind")
            for reader in [team.owner, team.member, team.viewer] {
                let listed = try await api.request(.get, path, auth: reader.session)
                #expect((listed.json["templates"] as? [[String: Any]])?.map { $0["id"] as? String } == [id])
                #expect(
                    try await api.request(.get, "/api/templates/\(id)?workspace_id=\(org)", auth: reader.session)
                        .status == .ok)
            }
            for stranger in [team.outsider, team.removed] {
                #expect(try await api.request(.get, path, auth: stranger.session).status == .notFound)
                #expect(
                    try await api.request(.post, path, auth: stranger.session, json: Self.body).status == .notFound)
            }
            #expect(try await api.request(.post, path, auth: team.member.session, json: Self.body).status == .forbidden)
            #expect(
                try await api.request(.delete, "/api/templates/\(id)?workspace_id=\(org)", auth: team.member.session)
                    .status == .forbidden)
            #expect(try await api.request(.post, path, auth: team.owner.session, json: Self.body).status == .conflict)

            var bad = Self.body
            bad["type"] = "nonexistent"
            var refused = try await api.request(.post, path, auth: team.admin.session, json: bad)
            #expect(refused.status == .unprocessableContent && refused.text.contains("\"type\""))
            bad = Self.body
            bad["config"] = ["organization": "nope"]
            bad["limits"] = ["monthly_budget_usd": -1, "colour": "red"]
            bad["allowed_endpoints"] = ["/v1/../admin"]
            bad["name_pattern"] = ""
            refused = try await api.request(.post, path, auth: team.admin.session, json: bad)
            #expect(refused.status == .unprocessableContent, "\(refused.text)")
            let fields = (refused.json["error"] as? [String: Any])?["fields"] as? [String: Any] ?? [:]
            for field in [
                "config.organization", "limits.monthly_budget_usd", "limits.colour", "allowed_endpoints[0]",
                "name_pattern",
            ] {
                #expect(fields[field] != nil, "\(field): \(fields)")
            }

            var replaced = Self.body
            replaced["name"] = "OpenAI staging"
            replaced["limits"] = NSNull()
            let put = try await api.request(
                .put, "/api/templates/\(id)?workspace_id=\(org)", auth: team.owner.session, json: replaced)
            #expect(
                put.status == .ok && put.json["name"] as? String == "OpenAI staging" && put.json["limits"] is NSNull)
            #expect(
                try await api.request(.delete, "/api/templates/\(id)?workspace_id=\(org)", auth: team.admin.session)
                    .status == .noContent)
            #expect(
                try await api.request(.get, "/api/templates/\(id)?workspace_id=\(org)", auth: team.owner.session)
                    .status == .notFound)
            // A personal workspace is its user's: its templates are theirs alone.
            #expect(
                try await api.request(.post, "/api/templates", auth: team.member.session, json: Self.body).status
                    == .created)
        }
    }
}
