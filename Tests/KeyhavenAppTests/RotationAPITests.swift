import Foundation
import HTTPTypes
import KeyhavenApp
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import SQLKit
import Testing

/// The rotation policy over the JSON API, `?rotation_due=` and `POST /api/integrations/{id}/rotate` (SPEC §15).
@Suite("Rotation over the API")
struct RotationAPITests {
    nonisolated(unsafe) static let aws: [String: Any] = [
        "access_key_id": "AKIAQWERTYUIOPASDFGH", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ]

    @Test(
        "a policy is set on create and update, refused where the provider cannot rotate, and shown on the integration",
        arguments: TestDatabase.all)
    func policies(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let created = try await api.request(
                .post, "/api/integrations", auth: user.session,
                json: [
                    "name": "aws", "type": "aws", "credentials": Self.aws,
                    "rotation": ["mode": "automatic", "every_days": 30, "grace_hours": 2],
                ])
            #expect(created.status == .created)
            let rotation = try #require(created.json["rotation"] as? [String: Any])
            #expect(
                rotation["mode"] as? String == "automatic" && rotation["every_days"] as? Int == 30
                    && rotation["grace_hours"] as? Int == 2)
            #expect(created.json["rotation_due"] as? Bool == false)
            let refused = try await api.request(
                .post, "/api/integrations", auth: user.session,
                json: [
                    "name": "openai", "type": "openai", "credentials": "sk-test-00000000000000000000",
                    "rotation": ["mode": "automatic", "bogus": 1, "every_days": 0],
                ])
            #expect(refused.status == .unprocessableContent)
            let fields = try #require((refused.json["error"] as? [String: Any])?["fields"] as? [String: String])
            #expect(Set(fields.keys) == ["rotation.mode", "rotation.bogus", "rotation.every_days"], "\(fields)")
            #expect(
                try await api.request(.get, "/api/integrations", auth: user.session).json["integrations"] as? [Any]
                    != nil)
            #expect(refused.text.contains("only possible for aws, google_cloud and azure"))
            let id = try #require(created.json["id"] as? String)
            let updated = try await api.request(
                .patch, "/api/integrations/\(id)", auth: user.session, json: ["rotation": ["mode": "remind"]])
            #expect(updated.status == .ok)
            #expect((updated.json["rotation"] as? [String: Any])?["every_days"] as? Int == 90)
            let off = try await api.request(
                .patch, "/api/integrations/\(id)", auth: user.session, json: ["rotation": ["mode": "off"]])
            #expect((off.json["rotation"] as? [String: Any])?["mode"] as? String == "off")
        }
    }

    @Test(
        "rotation_due lists the integrations whose credentials are older than their policy, across pages",
        arguments: TestDatabase.all)
    func due(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            var dueIDs: [String] = []
            for index in 0..<5 {
                let response = try await api.request(
                    .post, "/api/integrations", auth: user.session,
                    json: [
                        "name": "key \(index)", "type": "openai", "credentials": "sk-test-0000000000000000000\(index)",
                        "rotation": ["mode": "remind", "every_days": 10],
                    ])
                let id = try #require(response.json["id"] as? String)
                if index % 2 == 0 {
                    // Stored 11 days ago.
                    try await api.handle.database.transaction { sql in
                        try await sql.raw(
                            """
                            UPDATE integrations SET credentials_changed_at = \
                            \(bind: Date().addingTimeInterval(-11 * 86400)) WHERE id = \(bind: UUID(uuidString: id)!)
                            """
                        ).run()
                    }
                    dueIDs.append(id)
                }
            }
            var seen: [String] = []
            var cursor: String?
            for _ in 0..<5 {
                let query = "/api/integrations?rotation_due=true&limit=2" + (cursor.map { "&cursor=\($0)" } ?? "")
                let page = try await api.request(.get, query, auth: user.session)
                #expect(page.status == .ok)
                let items = page.json["integrations"] as? [[String: Any]] ?? []
                #expect(items.allSatisfy { $0["rotation_due"] as? Bool == true })
                seen += items.compactMap { $0["id"] as? String }
                cursor = page.json["next_cursor"] as? String
                if cursor == nil { break }
            }
            #expect(Set(seen) == Set(dueIDs) && seen.count == dueIDs.count)
            let notDue = try await api.request(.get, "/api/integrations?rotation_due=false", auth: user.session)
            #expect((notDue.json["integrations"] as? [Any])?.count == 2)
            #expect(
                try await api.request(.get, "/api/integrations?rotation_due=yes", auth: user.session).status
                    == .badRequest)
            // The page shows it too: one badge per due integration.
            let page = try await api.request(.get, "/integrations", auth: .sessionWithoutCSRF(cookie: user.cookie))
            #expect(page.text.components(separatedBy: "Rotación pendiente").count - 1 == dueIDs.count)
        }
    }

    @Test(
        """
        POST /rotate starts a rotation (202), refuses a second one and \
        a provider that cannot (409), and answers 404 to a stranger
        """,
        arguments: TestDatabase.all)
    func rotate(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let stranger = try await api.user()
            let aws = try #require(
                try await api.request(
                    .post, "/api/integrations", auth: user.session,
                    json: [
                        "name": "aws", "type": "aws", "credentials": Self.aws,
                    ]
                ).json["id"] as? String)
            let openai = try await api.openAIIntegration(for: user.session)
            #expect(
                try await api.request(.post, "/api/integrations/\(aws)/rotate", auth: stranger.session).status
                    == .notFound)
            let started = try await api.request(.post, "/api/integrations/\(aws)/rotate", auth: user.session)
            #expect(started.status == .accepted)
            #expect(started.json["state"] as? String == "requested" && started.json["integration_id"] as? String == aws)
            #expect(
                try await api.request(.post, "/api/integrations/\(aws)/rotate", auth: user.session).status == .conflict)
            #expect(
                try await api.request(.post, "/api/integrations/\(openai)/rotate", auth: user.session).status
                    == .conflict)
            let pat = try await api.personalToken(for: user, scopes: ["integrations:read"])
            #expect(
                try await api.request(.post, "/api/integrations/\(aws)/rotate", auth: .bearer(pat.token)).status
                    == .forbidden)
            let events = try await api.runtime.audit.events(
                ownerID: user.id, integrationID: UUID(uuidString: aws)!, limit: 20, before: nil)
            #expect(events.contains { $0.action == "integration.rotation.start" && $0.actorType == "user" })
        }
    }
}
