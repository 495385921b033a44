import Foundation
import HTTPTypes
import KeyhavenApp
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import SQLKit
import Testing

@Suite("Leak scan")
struct LeakScanTests {
    @Test(
        "canary credentials of every type appear in no response, header, log line, audit row or database column",
        arguments: TestDatabase.all)
    func canaries(kind: TestDatabase) async throws {
        let jwtSecret = "leak-scan-jwt-secret-long-enough-0123456789"
        try await APIHarness.with(kind, configure: { $0.jwt = testJWTSettings(jwtSecret) }) { api in
            let first = Canaries()
            let second = Canaries()
            let user = try await api.signup()
            let pat = try await api.personalToken(for: user, scopes: ["integrations:read", "integrations:write"])
            let service = try await api.serviceToken()
            var ids: [String: String] = [:]
            for type in ["openai", "anthropic", "gemini", "aws", "azure", "google_cloud"] {
                let created = try await api.request(
                    .post, "/api/integrations", auth: user.session, json: first.body(type))
                #expect(created.status == .created, "\(type): \(created.text)")
                ids[type] = created.json["id"] as? String
            }
            // Every route, with every kind of caller.
            _ = try await api.request(.get, "/api/integrations", auth: user.session)
            _ = try await api.request(.get, "/api/integrations", auth: .bearer(pat.token))
            let external = try await jwt(secret: jwtSecret, subject: "leak-scan-subject", expiresIn: 600)
            _ = try await api.request(.get, "/api/integrations", auth: .bearer(external))
            var expected: [String: String] = [:]
            for (type, id) in ids {
                _ = try await api.request(.get, "/api/integrations/\(id)", auth: .bearer(pat.token))
                var body = second.body(type)
                body["type"] = nil
                body["name"] = "\(type) rotated"
                let updated = try await api.request(
                    .put, "/api/integrations/\(id)", auth: .bearer(pat.token), json: body)
                #expect(updated.status == .ok, "\(type): \(updated.text)")
                _ = try await api.request(
                    .patch, "/api/integrations/\(id)", auth: user.session, json: ["enabled": false])
                _ = try await api.request(.get, "/api/integrations/\(id)/credentials", auth: user.session)
                #expect(
                    try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
                        .status == .conflict)
                _ = try await api.request(
                    .patch, "/api/integrations/\(id)", auth: user.session, json: ["enabled": true])
                let read = try await api.request(
                    .get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
                #expect(read.status == .ok)
                expected[id] = read.text
            }
            // The backend receives the second set of canaries, exactly.
            #expect(expected[ids["openai"]!]?.contains(second.openai) == true)
            #expect(expected[ids["aws"]!]?.contains(second.awsSecret) == true)
            #expect(expected[ids["google_cloud"]!]?.contains(second.googleKeyID) == true)
            _ = try await api.request(.delete, "/api/integrations/\(ids["gemini"]!)", auth: user.session)
            // Organizations: an integration created in one, another moved into it, both read with its scoped token,
            // and every organization route in between.
            let created = try await api.request(.post, "/api/orgs", auth: user.session, json: ["name": "leak team"])
            let org = try #require(created.json["id"] as? String)
            var orgBody = first.body("aws")
            orgBody["name"] = "team aws"
            orgBody["workspace_id"] = org
            let inOrg = try #require(
                try await api.request(.post, "/api/integrations", auth: user.session, json: orgBody).json["id"]
                    as? String)
            let move = try await api.request(
                .post, "/api/integrations/\(ids["azure"]!)/move", auth: .bearer(pat.token), json: ["workspace_id": org])
            #expect(move.status == .ok)
            let scoped = try await api.request(
                .post, "/api/orgs/\(org)/service-tokens", auth: user.session,
                json: ["name": "team backend", "scopes": ["credentials:read"]])
            let scopedToken = try #require(scoped.json["secret"] as? String)
            for id in [inOrg, ids["azure"]!] {
                #expect(
                    try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(scopedToken))
                        .status == .ok)
            }
            _ = try await api.request(
                .get, "/api/integrations/\(ids["openai"]!)/credentials", auth: .bearer(scopedToken))
            _ = try await api.request(.get, "/api/integrations?workspace_id=\(org)", auth: .bearer(pat.token))
            _ = try await api.request(.get, "/api/integrations/\(inOrg)", auth: user.session)
            _ = try await api.request(
                .patch, "/api/integrations/\(inOrg)", auth: user.session, json: ["name": "team aws 2"])
            _ = try await api.request(.get, "/api/orgs", auth: user.session)
            _ = try await api.request(.get, "/api/orgs/\(org)", auth: user.session)
            _ = try await api.request(.get, "/api/orgs/\(org)/members", auth: user.session)
            _ = try await api.request(
                .post, "/api/orgs/\(org)/invitations", auth: user.session,
                json: ["email": "teammate@example.test", "role": "member"])
            _ = try await api.request(.get, "/api/orgs/\(org)/invitations", auth: user.session)
            _ = try await api.request(.get, "/api/orgs/\(org)/service-tokens", auth: user.session)
            _ = try await api.request(.get, "/api/audit?workspace_id=\(org)", auth: user.session)
            _ = try await api.request(.get, "/api/audit", auth: user.session)
            _ = try await api.request(.get, "/api/tokens", auth: user.session)
            _ = try await api.request(.get, "/api/auth/me", auth: user.session)
            _ = try await api.request(.post, "/api/auth/logout", auth: user.session)
            // A failed create with a canary in it must not echo it either.
            let third = Canaries()
            var invalid = third.body("openai")
            invalid["config"] = ["organization": "bad"]
            #expect(
                try await api.request(.post, "/api/integrations", auth: .bearer(pat.token), json: invalid).status
                    == .unprocessableContent)

            let canaries = first.all + second.all + third.all
            var responses: [Data] = []
            for (path, response) in api.seen.all where !(path.hasSuffix("/credentials") && response.status == .ok) {
                responses.append(response.body)
                responses.append(Data(response.headers.map { "\($0.name): \($0.value)" }.joined(separator: "\n").utf8))
            }
            let logs = api.logs.all.map { Data($0.utf8) }
            let database = try await api.handle.dumpEverything()
            let auditRows = try await api.handle.database.transaction { sql in
                try await sql.raw("SELECT * FROM audit_events").all().map { row in
                    Data(((try? SQLAuditLog.eventText(row)) ?? "").utf8)
                }
            }
            #expect(!logs.isEmpty && !auditRows.isEmpty && !database.isEmpty)
            for canary in canaries {
                let needle = Data(canary.utf8)
                #expect(!containsAnywhere(needle, in: responses), "a response holds a canary")
                #expect(!containsAnywhere(needle, in: logs), "a log line holds a canary")
                #expect(!containsAnywhere(needle, in: auditRows), "an audit row holds a canary")
                #expect(!containsAnywhere(needle, in: database), "the database holds a canary")
            }
        }
    }
}
