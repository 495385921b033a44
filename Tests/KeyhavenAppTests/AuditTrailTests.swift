import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import SQLKit
import Testing

@Suite("Audit trail")
struct AuditTrailTests {
    /// Fills the trail through the API: sign-up, integrations, a token, credential reads.
    func populate(_ api: APIHarness) async throws {
        let user = try await api.user()
        let id = try await api.openAIIntegration(for: user.session)
        _ = try await api.request(.put, "/api/integrations/\(id)", auth: user.session, json: ["credentials": "sk-rotated-audit-key-0001"])
        let service = try await api.serviceToken()
        _ = try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
        _ = try await api.personalToken(for: user, scopes: ["integrations:read"])
    }

    @Test("an edited or deleted event breaks the chain at that event", arguments: TestDatabase.all)
    func tamperDetection(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            try await populate(api)
            let log = api.runtime.audit
            guard case .intact(let count) = try await log.verify() else {
                Issue.record("a fresh chain must verify")
                return
            }
            #expect(count == 5)
            let events = try await api.handle.database.withConnection { sql in
                try await sql.raw("SELECT at FROM audit_events").all().map { try $0.decode(column: "at", as: String.self) }
            }
            for at in events {
                #expect(try Date(at, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)).timeIntervalSinceNow > -60)
            }
            let database = api.handle.database
            // Edit one stored event.
            let original = try await database.withConnection { sql in
                try await sql.raw("SELECT detail FROM audit_events WHERE seq = 3").first()!.decode(column: "detail", as: String.self)
            }
            try await database.withConnection { sql in
                try await sql.raw("UPDATE audit_events SET detail = '{\"name\":\"forged\"}' WHERE seq = 3").run()
            }
            #expect(try await log.verify() == .broken(seq: 3, reason: "its contents do not match its hash"))
            try await database.withConnection { sql in
                try await sql.raw("UPDATE audit_events SET detail = \(bind: original) WHERE seq = 3").run()
            }
            #expect(try await log.verify() == .intact(events: count))
            // Edit another column, and recompute its hash as a forger would: the next link breaks.
            try await database.withConnection { sql in
                try await sql.raw("UPDATE audit_events SET outcome = 'denied', hash = \(bind: String(repeating: "a", count: 64)) WHERE seq = 2").run()
            }
            if case .broken(let seq, _) = try await log.verify() { #expect(seq == 2) } else { Issue.record("not detected") }
            // Delete one event.
            try await database.withConnection { sql in
                try await sql.raw("DELETE FROM audit_events WHERE seq = 2").run()
            }
            #expect(try await log.verify() == .broken(seq: 2, reason: "event 2 is missing"))
        }
    }

    @Test("keyhaven audit verify exits 0 on an intact chain and names the first broken event otherwise")
    func command() async throws {
        let binary = try KeyhavenBinary()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let key = Fixtures.masterKeyText()
        let environment = ["KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/keyhaven.sqlite", "KEYHAVEN_MASTER_KEY": key]

        // The operator creates a user (password on stdin) and a service token (the token alone on the last line).
        let created = try binary.start(["users", "create", "--email", "ops@example.test"], environment: environment, in: directory.path)
        created.process.standardInput.map { ($0 as? Pipe)?.fileHandleForWriting.write(Data("\(Fixtures.password)\n".utf8)) }
        let createdStatus = await created.wait()
        #expect(createdStatus == 0, "\(created.stderr)")
        #expect(UUID(uuidString: created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) != nil)

        let token = try await binary.run(["tokens", "create-service", "--name", "backend"], environment: environment, in: directory.path)
        #expect(token.status == 0, "\(token.stderr)")
        let lastLine = token.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(lastLine.hasPrefix("kh_svc_") && lastLine.count > 40)

        let tokenID = try #require(token.stdout.split(separator: " ").dropFirst(2).first.map(String.init))
        let revoked = try await binary.run(["tokens", "revoke", tokenID], environment: environment, in: directory.path)
        #expect(revoked.status == 0, "\(revoked.stderr)")
        let again = try await binary.run(["tokens", "revoke", tokenID], environment: environment, in: directory.path)
        #expect(again.status != 0 && again.stderr.hasPrefix("keyhaven: error:"))

        let intact = try await binary.run(["audit", "verify"], environment: environment, in: directory.path)
        #expect(intact.status == 0)
        #expect(intact.stdout.contains("intact: 3 events"))

        let configuration = KeyhavenConfiguration(
            database: .sqlite(path: directory.path + "/keyhaven.sqlite"),
            keyring: KeyringSource(environmentKey: try MasterKey(id: "primary", base64: key)))
        let runtime = try await KeyhavenRuntime.open(configuration, allowKeyringCreation: false, logger: Logger(label: "test"))
        try await runtime.database.withConnection { sql in
            try await sql.raw("UPDATE audit_events SET actor_type = 'user' WHERE seq = 2").run()
        }
        await runtime.shutdown()
        let broken = try await binary.run(["audit", "verify"], environment: environment, in: directory.path)
        #expect(broken.status != 0)
        #expect(broken.stderr.contains("keyhaven: error: the audit chain is broken at event 2"))
    }
}
