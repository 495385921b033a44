import Foundation
import HTTPTypes
import KeyhavenApp
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import SQLKit
import Testing

/// Canary credentials of every type: unique values that must never appear outside their ciphertext.
struct Canaries {
    let tag = UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()

    var openai: String { "sk-proj-canary\(tag)" }
    var anthropic: String { "sk-ant-canary\(tag)" }
    var gemini: String { "AIzaCanary" + String(tag.prefix(29)) }
    var awsSecret: String { "Canary" + String(tag.prefix(30)) + "AbCd" }
    var awsSession: String { "FwoGZXIvYXdzCanarySession\(tag)" }
    var azureSecret: String { "AzureCanary~\(tag)" }
    var googleKeyID: String { "canarykeyid\(tag)" }
    /// A PEM body unique to this run (base64 of a DER-looking blob).
    var googlePEMBody: String {
        Data([0x30, 0x82] + Array("canary-private-key-\(tag)".utf8) + Array(repeating: 0x41, count: 80))
            .base64EncodedString()
    }
    var googleKey: String { "-----BEGIN PRIVATE KEY-----\n\(googlePEMBody)\n-----END PRIVATE KEY-----\n" }

    var all: [String] { [openai, anthropic, gemini, awsSecret, awsSession, azureSecret, googleKeyID, googlePEMBody] }

    func body(_ type: String) -> [String: Any] {
        let credentials: Any
        switch type {
        case "openai": credentials = openai
        case "anthropic": credentials = anthropic
        case "gemini": credentials = gemini
        case "aws":
            credentials = [
                "access_key_id": "ASIAQWERTYUIOPASDFGH", "secret_access_key": awsSecret, "session_token": awsSession,
            ]
        case "azure":
            credentials = [
                "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                "client_id": "04b07795-8ddb-461a-bbee-02f9e1bf7b46", "client_secret": azureSecret,
            ]
        default:
            credentials = [
                "type": "service_account", "project_id": "canary-project", "private_key_id": googleKeyID,
                "private_key": googleKey,
                "client_email": "vault@canary-project.iam.gserviceaccount.com",
                "token_uri": "https://oauth2.googleapis.com/token",
            ]
        }
        return ["name": "\(type) integration", "type": type, "credentials": credentials]
    }
}

@Suite("Integrations API")
struct IntegrationAPITests {
    @Test("create, list with cursors, get, update, rotate, disable and delete", arguments: TestDatabase.all)
    func lifecycle(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            var ids: [String] = []
            for index in 0..<5 {
                ids.append(
                    try await api.openAIIntegration(
                        for: user.session, name: "key \(index)", key: "sk-test-key-number-\(index)-abcd\(index)"))
            }
            let first = try await api.request(.get, "/api/integrations?limit=2", auth: user.session)
            let page1 = try #require(first.json["integrations"] as? [[String: Any]])
            #expect(page1.map { $0["name"] as? String } == ["key 4", "key 3"], "newest first")
            var names = page1.compactMap { $0["name"] as? String }
            var cursor = first.json["next_cursor"] as? String
            while let next = cursor {
                let page = try await api.request(.get, "/api/integrations?limit=2&cursor=\(next)", auth: user.session)
                names += (page.json["integrations"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
                cursor = page.json["next_cursor"] as? String
            }
            #expect(names == ["key 4", "key 3", "key 2", "key 1", "key 0"])
            #expect(
                try await api.request(.get, "/api/integrations?limit=201", auth: user.session).status == .badRequest)
            #expect(
                try await api.request(.get, "/api/integrations?cursor=bogus", auth: user.session).status == .badRequest)

            let id = ids[0]
            let created = try await api.request(.get, "/api/integrations/\(id)", auth: user.session).json
            #expect(created["status"] as? String == "verifying")
            #expect(created["credential_hint"] as? String == "sk-…bcd0")
            #expect(created["credential_version"] as? Int == 1)
            let createdAt = try #require(created["created_at"] as? String)
            #expect(
                try Date(createdAt, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))
                    .timeIntervalSinceNow > -60)
            #expect(created["workspace_id"] as? String == user.id.uuidString.lowercased())
            #expect(
                Set(created.keys) == [
                    "id", "workspace_id", "name", "type", "status", "enabled", "config", "credential_hint",
                    "credential_version",
                    "error_message", "last_verified_at", "last_used_at", "created_at", "updated_at",
                    "rotation", "rotation_due", "retire_error",
                ])

            let taken = try await api.request(
                .put, "/api/integrations/\(id)", auth: user.session, json: ["name": "key 1"])
            #expect(taken.status == .conflict)
            let rotated = try await api.request(
                .patch, "/api/integrations/\(id)", auth: user.session,
                json: ["credentials": "sk-test-rotated-key-9999", "config": ["organization": "org-abc"]])
            #expect(rotated.status == .ok)
            #expect(rotated.json["credential_version"] as? Int == 2)
            #expect(rotated.json["credential_hint"] as? String == "sk-…9999")
            #expect((rotated.json["config"] as? [String: String]) == ["organization": "org-abc"])
            let disabled = try await api.request(
                .put, "/api/integrations/\(id)", auth: user.session, json: ["enabled": false])
            #expect(disabled.json["status"] as? String == "disabled")
            let enabled = try await api.request(
                .put, "/api/integrations/\(id)", auth: user.session, json: ["enabled": true])
            #expect(enabled.json["status"] as? String == "verifying")

            let service = try await api.serviceToken()
            let read = try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
            #expect(read.status == .ok)
            #expect(read.json["credentials"] as? String == "sk-test-rotated-key-9999")
            #expect(read.json["credential_version"] as? Int == 2)
            #expect(read.headers[.cacheControl] == "no-store")
            let used = try await api.request(.get, "/api/integrations/\(id)", auth: user.session).json
            #expect(used["last_used_at"] is String)

            #expect(try await api.request(.delete, "/api/integrations/\(id)", auth: user.session).status == .noContent)
            #expect(try await api.request(.get, "/api/integrations/\(id)", auth: user.session).status == .notFound)
            #expect(
                try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token)).status
                    == .notFound)
            let secretRows = try await api.handle.database.transaction { sql in
                try await sql.raw(
                    "SELECT COUNT(*) AS n FROM secrets WHERE integration_id = \(bind: UUID(uuidString: id)!)"
                ).first()!
                .decode(column: "n", as: Int.self)
            }
            #expect(secretRows == 0, "deleting destroys every secret version")

            let actions = try await api.runtime.audit.events(
                ownerID: user.id, integrationID: UUID(uuidString: id)!, limit: 50, before: nil
            )
            .map(\.action)
            for action in [
                "integration.create", "integration.update", "integration.credentials.rotate", "integration.disable",
                "integration.enable", "credentials.read", "integration.delete",
            ] {
                #expect(actions.contains(action), "\(action) was not audited")
            }
            let listed = try await api.request(.get, "/api/audit?integration_id=\(id)&limit=3", auth: user.session)
            #expect((listed.json["events"] as? [[String: Any]])?.count == 3)
            #expect(listed.json["next_cursor"] is String)
        }
    }

    @Test(
        "with requests on their connections' event loops, a live server serves the same API",
        arguments: TestDatabase.all)
    func requestsOnEventLoops(kind: TestDatabase) async throws {
        try await APIHarness.with(kind, live: true, configure: { $0.requestsOnEventLoop = true }) { api in
            let user = try await api.user()
            let key = "sk-test-on-the-loop-0000000001"
            let id = try await api.openAIIntegration(for: user.session, name: "on the loop", key: key)
            let listed = try await api.request(.get, "/api/integrations", auth: user.session)
            #expect((listed.json["integrations"] as? [[String: Any]])?.first?["id"] as? String == id)
            let service = try await api.serviceToken()
            // Concurrent reads, each on its connection's loop, grouped on the writer.
            let reads = try await withThrowingTaskGroup(of: APIResponse.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(reads.allSatisfy { $0.status == .ok && $0.json["credentials"] as? String == key })
            #expect(try await api.request(.delete, "/api/integrations/\(id)", auth: user.session).status == .noContent)
        }
    }

    @Test(
        "a list carries an ETag; sent back unchanged it answers 304 with no body, and any change gives a new one",
        arguments: TestDatabase.all)
    func listRevalidation(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            _ = try await api.openAIIntegration(for: user.session, name: "first", key: "sk-test-etag-key-0001")
            let first = try await api.request(.get, "/api/integrations", auth: user.session)
            let tag = try #require(first.headers[.eTag])
            #expect(tag.hasPrefix("\"") && tag.hasSuffix("\""), "a strong tag: \(tag)")
            let again = try await api.request(
                .get, "/api/integrations", auth: user.session, headers: [.ifNoneMatch: "\"other\", \(tag)"])
            #expect(again.status == .notModified)
            #expect(again.body.isEmpty)
            #expect(again.headers[.eTag] == tag)
            // A change to the list is another tag.
            _ = try await api.openAIIntegration(for: user.session, name: "second", key: "sk-test-etag-key-0002")
            let changed = try await api.request(
                .get, "/api/integrations", auth: user.session, headers: [.ifNoneMatch: tag])
            #expect(changed.status == .ok)
            #expect((changed.json["integrations"] as? [[String: Any]])?.count == 2)
            #expect(changed.headers[.eTag] != tag)
            // Another user's identical-looking request never matches: their list is their own.
            let other = try await api.user()
            let theirs = try await api.request(
                .get, "/api/integrations", auth: other.session, headers: [.ifNoneMatch: tag])
            #expect(theirs.status == .ok)
        }
    }

    @Test("another user's ids answer 404 on every route and change nothing", arguments: TestDatabase.all)
    func crossUser(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let owner = try await api.user()
            let integration = try await api.openAIIntegration(
                for: owner.session, name: "mine", key: "sk-owner-secret-key-000000")
            let token = try await api.personalToken(for: owner, scopes: ["integrations:read"])
            func snapshot() async throws -> String {
                let one = try await api.request(.get, "/api/integrations/\(integration)", auth: owner.session).text
                let tokens = try await api.request(.get, "/api/tokens", auth: owner.session).text
                let versions = try await api.runtime.secrets.versions(
                    of: SecretOwner(integrationID: UUID(uuidString: integration)!, ownerID: owner.id)
                ).map(\.version)
                return "\(one)|\(tokens)|\(versions)"
            }
            let before = try await snapshot()
            let intruder = try await api.user()
            let intruderPAT = try await api.personalToken(
                for: intruder, scopes: ["integrations:read", "integrations:write"]
            ).token
            for auth in [intruder.session, TestAuth.bearer(intruderPAT)] {
                var calls: [(HTTPRequest.Method, String, Any?)] = [
                    (.get, "/api/integrations/\(integration)", nil),
                    (.put, "/api/integrations/\(integration)", ["name": "stolen"]),
                    (.patch, "/api/integrations/\(integration)", ["credentials": "sk-intruder-key-0000000000"]),
                    (.delete, "/api/integrations/\(integration)", nil),
                ]
                if case .session = auth { calls.append((.delete, "/api/tokens/\(token.id)", nil)) }
                for (method, path, body) in calls {
                    let response = try await api.request(method, path, auth: auth, json: body)
                    #expect(response.status == .notFound, "\(method) \(path)")
                }
                let audit = try await api.request(.get, "/api/audit?integration_id=\(integration)", auth: auth)
                #expect((audit.json["events"] as? [Any])?.isEmpty == true, "another user's events must not be listed")
            }
            #expect(try await snapshot() == before)
        }
    }

    @Test(
        "malformed credentials of every type answer 422 naming the fields, and store nothing",
        arguments: TestDatabase.all)
    func validation(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let pem = Canaries().googleKey
            let account: [String: Any] = [
                "type": "service_account", "private_key_id": "abc123", "private_key": pem,
                "client_email": "a@b.iam.gserviceaccount.com",
            ]
            func with(_ base: [String: Any], _ changes: [String: Any]) -> [String: Any] { base.merging(changes) { $1 } }
            let cases: [(String, Any, Set<String>)] = [
                ("openai", "not-a-key", ["credentials"]),
                ("openai", "sk-short", ["credentials"]),
                ("openai", ["key": "sk-abc"], ["credentials"]),
                ("openai", "sk-has spaces in it 1234567", ["credentials"]),
                ("anthropic", "sk-proj-wrongprefix-123456789", ["credentials"]),
                ("anthropic", 42, ["credentials"]),
                ("anthropic", "sk-ant-", ["credentials"]),
                ("gemini", "AIzaTooShort", ["credentials"]),
                ("gemini", "BIza" + String(repeating: "x", count: 35), ["credentials"]),
                ("gemini", "AIza" + String(repeating: "x", count: 34) + "!", ["credentials"]),
                (
                    "aws", ["access_key_id": "AKIAQWERTYUIOPASDFGH", "secret_access_key": "tooshort"],
                    ["credentials.secret_access_key"]
                ),
                (
                    "aws", ["access_key_id": "XYZ", "secret_access_key": String(repeating: "a", count: 40)],
                    ["credentials.access_key_id"]
                ),
                (
                    "aws",
                    ["access_key_id": "ASIAQWERTYUIOPASDFGH", "secret_access_key": String(repeating: "a", count: 40)],
                    ["credentials.session_token"]
                ),
                ("aws", "AKIAQWERTYUIOPASDFGH", ["credentials"]),
                (
                    "azure",
                    [
                        "tenant_id": "contoso.onmicrosoft.com", "client_id": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
                        "client_secret": "s",
                    ], ["credentials.tenant_id"]
                ),
                (
                    "azure",
                    ["tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47", "client_id": "app", "client_secret": ""],
                    ["credentials.client_id", "credentials.client_secret"]
                ),
                (
                    "azure",
                    [
                        "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                        "client_id": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
                    ], ["credentials.client_secret"]
                ),
                ("google_cloud", with(account, ["private_key": "not a pem"]), ["credentials.private_key"]),
                ("google_cloud", with(account, ["type": "authorized_user"]), ["credentials.type"]),
                ("google_cloud", with(account, ["client_email": "nobody"]), ["credentials.client_email"]),
                ("google_cloud", "{not json", ["credentials"]),
            ]
            let auditBefore = try await api.runtime.audit.events(
                ownerID: user.id, integrationID: nil, limit: 200, before: nil
            ).count
            for (type, credentials, fields) in cases {
                let response = try await api.request(
                    .post, "/api/integrations", auth: user.session,
                    json: ["name": "bad \(type)", "type": type, "credentials": credentials])
                #expect(response.status == .unprocessableContent, "\(type) \(credentials)")
                #expect(Set(response.fields.keys) == fields, "\(type): \(response.fields)")
                #expect(!response.text.contains("tooshort") && !response.text.contains("sk-short"))
            }
            let others: [([String: Any], Set<String>)] = [
                (["type": "openai", "credentials": "sk-valid-key-000000000000"], ["name"]),
                (["name": "x", "type": "mystery", "credentials": "sk-valid-key-000000000000"], ["type"]),
                (["name": "x", "type": "openai"], ["credentials"]),
                (
                    [
                        "name": "x", "type": "openai", "credentials": "sk-valid-key-000000000000",
                        "config": ["organization": "acme"],
                    ], ["config.organization"]
                ),
                (
                    [
                        "name": "x", "type": "aws",
                        "credentials": [
                            "access_key_id": "AKIAQWERTYUIOPASDFGH",
                            "secret_access_key": String(repeating: "a", count: 40),
                        ], "config": ["region": "moon-1"],
                    ], ["config.region"]
                ),
                (
                    ["name": "x", "type": "openai", "credentials": "sk-valid-key-000000000000", "owner_id": "someone"],
                    ["owner_id"]
                ),
            ]
            for (body, fields) in others {
                let response = try await api.request(.post, "/api/integrations", auth: user.session, json: body)
                #expect(response.status == .unprocessableContent)
                #expect(Set(response.fields.keys) == fields, "\(response.fields)")
            }
            for raw in ["{", "[1, 2]", "\"text\"", "{\"name\": }"] {
                let response = try await api.request(
                    .post, "/api/integrations", auth: user.session, json: Data(raw.utf8))
                #expect(response.status == .badRequest, "\(raw)")
            }
            let counts = try await api.handle.database.transaction { sql in
                (
                    try await sql.raw("SELECT COUNT(*) AS n FROM integrations").first()!.decode(
                        column: "n", as: Int.self),
                    try await sql.raw("SELECT COUNT(*) AS n FROM secrets").first()!.decode(column: "n", as: Int.self)
                )
            }
            #expect(counts.0 == 0 && counts.1 == 0)
            #expect(
                try await api.runtime.audit.events(ownerID: user.id, integrationID: nil, limit: 200, before: nil).count
                    == auditBefore)
        }
    }

    @Test(
        "a credential read is refused with 503 and returns nothing when it cannot be audited",
        arguments: TestDatabase.all)
    func auditOrNothing(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session, key: "sk-audit-or-nothing-123456")
            let service = try await api.serviceToken()
            try await api.handle.database.transaction { sql in
                try await sql.raw("ALTER TABLE audit_events RENAME TO audit_events_gone").run()
            }
            let response = try await api.request(
                .get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
            #expect(response.status == .serviceUnavailable)
            #expect(!response.text.contains("sk-audit-or-nothing"))
            try await api.handle.database.transaction { sql in
                try await sql.raw("ALTER TABLE audit_events_gone RENAME TO audit_events").run()
            }
            let after = try await api.request(.get, "/api/integrations/\(id)", auth: user.session)
            #expect(after.json["last_used_at"] is NSNull, "a refused read must not count as a use")
        }
    }

    @Test(
        "a tampered ciphertext fails the read, is audited, and shows the integration as error",
        arguments: TestDatabase.all)
    func tamperedRead(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session, key: "sk-tampered-read-key-1234")
            try await api.handle.database.transaction { sql in
                let row = try await sql.raw("SELECT ciphertext FROM secrets").first()!
                var bytes = try row.decode(column: "ciphertext", as: Data.self)
                bytes[bytes.startIndex] ^= 1
                try await sql.raw("UPDATE secrets SET ciphertext = \(bind: bytes)").run()
            }
            let service = try await api.serviceToken()
            let response = try await api.request(
                .get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
            #expect(response.status == .internalServerError)
            #expect((response.json["error"] as? [String: Any])?["code"] as? String == "decryption_failed")
            let shown = try await api.request(.get, "/api/integrations/\(id)", auth: user.session).json
            #expect(shown["status"] as? String == "error")
            let events = try await api.runtime.audit.events(
                ownerID: user.id, integrationID: UUID(uuidString: id)!, limit: 10, before: nil)
            #expect(events.first?.action == "credentials.read" && events.first?.outcome == "failure")
        }
    }
}
