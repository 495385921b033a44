import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenTestSupport
import Logging
import SQLKit
import Testing

@testable import KeyhavenStorage

@Suite("Audit trail")
struct AuditTrailTests {
    /// Fills the trail through the API: sign-up, integrations, a token, credential reads.
    func populate(_ api: APIHarness) async throws {
        let user = try await api.user()
        let id = try await api.openAIIntegration(for: user.session)
        _ = try await api.request(
            .put, "/api/integrations/\(id)", auth: user.session, json: ["credentials": "sk-rotated-audit-key-0001"])
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
            let events = try await api.handle.database.transaction { sql in
                try await sql.raw("SELECT at FROM audit_events").all().map {
                    try $0.decode(column: "at", as: String.self)
                }
            }
            for at in events {
                #expect(
                    try Date(at, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))
                        .timeIntervalSinceNow > -60)
            }
            let database = api.handle.database
            // Edit one stored event.
            let original = try await database.transaction { sql in
                try await sql.raw("SELECT detail FROM audit_events WHERE seq = 3").first()!.decode(
                    column: "detail", as: String.self)
            }
            try await database.transaction { sql in
                try await sql.raw("UPDATE audit_events SET detail = '{\"name\":\"forged\"}' WHERE seq = 3").run()
            }
            #expect(try await log.verify() == .broken(seq: 3, reason: "its contents do not match its hash"))
            try await database.transaction { sql in
                try await sql.raw("UPDATE audit_events SET detail = \(bind: original) WHERE seq = 3").run()
            }
            #expect(try await log.verify() == .intact(events: count))
            // Edit another column, and recompute its hash as a forger would: the next link breaks.
            try await database.transaction { sql in
                try await sql.raw(
                    """
                    UPDATE audit_events SET outcome = 'denied', hash = \
                    \(bind: String(repeating: "a", count: 64)) WHERE seq = 2
                    """
                ).run()
            }
            if case .broken(let seq, _) = try await log.verify() {
                #expect(seq == 2)
            } else {
                Issue.record("not detected")
            }
            // Delete one event.
            try await database.transaction { sql in
                try await sql.raw("DELETE FROM audit_events WHERE seq = 2").run()
            }
            #expect(try await log.verify() == .broken(seq: 2, reason: "event 2 is missing"))
        }
    }

    @Test(
        "without the audit key a forger cannot rebuild the chain, even recomputing every hash with SHA-256",
        arguments: TestDatabase.all)
    func keyedChain(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            try await populate(api)
            let log = api.runtime.audit
            let database = api.handle.database
            let rows = try await database.transaction { sql in
                try await sql.raw("SELECT * FROM audit_events ORDER BY seq").all().map { try SQLAuditLog.eventText($0) }
            }
            #expect(
                rows.allSatisfy { $0.split(separator: "|").last.map { $0.hasPrefix("audit-") } == true },
                "every event names its key")
            // A forger edits event 3 and recomputes it and every later link the way an unkeyed chain would allow.
            try await database.transaction { sql in
                try await sql.raw("UPDATE audit_events SET detail = '{\"name\":\"forged\"}' WHERE seq = 3").run()
                var previous = try await sql.raw("SELECT hash FROM audit_events WHERE seq = 2").first()!.decode(
                    column: "hash", as: String.self)
                for row in try await sql.raw("SELECT * FROM audit_events WHERE seq >= 3 ORDER BY seq").all() {
                    let seq = try row.decode(column: "seq", as: Int64.self)
                    let forged = try SQLAuditLog.forgeUnkeyed(row, prevHash: previous)
                    try await sql.raw(
                        """
                        UPDATE audit_events SET prev_hash = \(bind: previous), \
                        hash = \(bind: forged) WHERE seq = \(bind: seq)
                        """
                    ).run()
                    previous = forged
                }
            }
            #expect(try await log.verify() == .broken(seq: 3, reason: "its contents do not match its hash"))
            // Dropping the key id to pass the forged events off as old, unkeyed ones does not work either.
            try await database.transaction { sql in
                try await sql.raw("UPDATE audit_events SET key_id = NULL WHERE seq >= 3").run()
            }
            #expect(try await log.verify() == .broken(seq: 3, reason: "an unkeyed event follows keyed ones"))
        }
    }

    @Test(
        "a trail written before the chain was keyed verifies: its SHA-256 links first, keyed links after",
        arguments: TestDatabase.all)
    func legacyPrefix(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            try await populate(api)
            let log = api.runtime.audit
            // Rewrite events 1 and 2 as an older Keyhaven stored them, and the rest as appended after the upgrade.
            try await api.handle.database.transaction { sql in
                var previous = SQLAuditLog.genesis
                for row in try await sql.raw("SELECT * FROM audit_events ORDER BY seq").all() {
                    var event = try SQLAuditLog.event(from: row)
                    event.prevHash = previous
                    event.keyID = event.seq < 3 ? nil : log.keys.current.id
                    event.hash =
                        event.seq < 3
                        ? SQLAuditLog.legacyHash(event) : log.keys.current.mac(SQLAuditLog.chainedText(event))
                    try await sql.raw(
                        """
                        UPDATE audit_events SET key_id = \(bind: event.keyID), prev_hash = \(bind: event.prevHash),
                        hash = \(bind: event.hash) WHERE seq = \(bind: event.seq)
                        """
                    ).run()
                    previous = event.hash
                }
            }
            #expect(try await log.verify() == .intact(events: 5))
        }
    }

    @Test(
        "a tail deleted below a signed checkpoint is named; a forged checkpoint is refused", arguments: TestDatabase.all
    )
    func checkpoints(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            try await populate(api)
            let log = api.runtime.audit
            let database = api.handle.database
            let checkpoint = try #require(try await log.checkpoint())
            #expect(checkpoint.seq == 5)
            #expect(try await log.checkpoint() == checkpoint, "one checkpoint per head")
            #expect(try await log.verify() == .intact(events: 5))
            try await populate(api)
            #expect(try await log.verify() == .intact(events: 10))
            // Deleting the newest events above the checkpoint leaves a shorter, valid chain ...
            try await database.transaction { sql in try await sql.raw("DELETE FROM audit_events WHERE seq > 7").run() }
            #expect(try await log.verify() == .intact(events: 7))
            // ... but below it, the checkpoint names what is missing.
            try await database.transaction { sql in try await sql.raw("DELETE FROM audit_events WHERE seq > 3").run() }
            #expect(
                try await log.verify()
                    == .broken(
                        seq: 4, reason: "events 4 to 5 are missing: a signed checkpoint records the trail up to 5"))
            // A checkpoint written without the key is refused.
            try await database.transaction { sql in
                try await sql.raw(
                    "UPDATE audit_checkpoints SET seq = 3, head_hash = (SELECT hash FROM audit_events WHERE seq = 3)"
                ).run()
            }
            #expect(
                try await log.verify() == .broken(seq: 3, reason: "its checkpoint is not signed with the audit key"))
        }
    }

    @Test("the running server writes signed checkpoints of the head to the database and to its log")
    func checkpointService() async throws {
        try await APIHarness.with(.sqlite, live: true, configure: { $0.auditCheckpointInterval = .milliseconds(100) }) {
            api in
            try await populate(api)
            var stored: Int64?
            for _ in 0..<50 where stored != 5 {
                try await Task.sleep(for: .milliseconds(100))
                stored = try await api.handle.database.transaction { sql in
                    try await sql.raw("SELECT MAX(seq) AS seq FROM audit_checkpoints").first()?.decode(
                        column: "seq", as: Int64?.self)
                }
            }
            #expect(stored == 5)
            #expect(
                api.logs.all.contains {
                    $0.contains("audit checkpoint") && $0.contains("\"seq\": 5") && $0.contains("head_hash")
                })
        }
    }

    @Test(
        """
        the audit key follows master-key rotation: the chain \
        verifies before and after, and the old key can be retired
        """,
        arguments: TestDatabase.all)
    func survivesRotation(kind: TestDatabase) async throws {
        let handle = try await kind.make()
        defer { Task { await handle.close() } }
        let source = KeyringSource(file: KeyringFile(path: handle.directory.path + "/keyring.json"))
        let configuration = KeyhavenConfiguration(database: handle.location, keyring: source)
        let first = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: true, logger: Logger(label: "test"), database: handle.database)
        try await first.audit.append(AuditEntry(actor: .operator, action: .keyRotate))
        try await first.audit.checkpoint()
        let result = try await KeyManagement(database: handle.database, source: source, logger: Logger(label: "test"))
            .rotate()
        try await first.audit.append(AuditEntry(actor: .operator, action: .keyRotate))
        #expect(try await first.audit.verify() == .intact(events: 2))
        let old = try #require(result.retirable.first)
        try await KeyManagement(database: handle.database, source: source, logger: Logger(label: "test")).retire(
            id: old)
        // A new process holding only the new master key opens the audit key and verifies the whole chain.
        let second = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: false, logger: Logger(label: "test"), database: handle.database)
        #expect(try await second.audit.verify() == .intact(events: 2))
        try await first.http.shutdown()
        try await second.http.shutdown()
    }

    @Test("keyhaven audit verify exits 0 on an intact chain and names the first broken event otherwise")
    func command() async throws {
        let binary = try KeyhavenBinary()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let key = Fixtures.masterKeyText()
        let environment = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/keyhaven.sqlite", "KEYHAVEN_MASTER_KEY": key,
        ]

        // The operator creates a user (password on stdin) and a service token (the token alone on the last line).
        let created = try binary.start(
            ["users", "create", "--email", "ops@example.test"], environment: environment, in: directory.path)
        created.standardInput.write(Data("\(Fixtures.password)\n".utf8))
        let createdStatus = await created.wait()
        #expect(createdStatus == 0, "\(created.stderr)")
        #expect(UUID(uuidString: created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) != nil)

        let token = try await binary.run(
            ["tokens", "create-service", "--name", "backend"], environment: environment, in: directory.path)
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
        let runtime = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: false, logger: Logger(label: "test"))
        try await runtime.database.transaction { sql in
            try await sql.raw("UPDATE audit_events SET actor_type = 'user' WHERE seq = 2").run()
        }
        await runtime.shutdown()
        let broken = try await binary.run(["audit", "verify"], environment: environment, in: directory.path)
        #expect(broken.status != 0)
        #expect(broken.stderr.contains("keyhaven: error: the audit chain is broken at event 2"))
    }
}

extension SQLAuditLog {
    /// What someone with write access to the database but without the master keys can compute for a row: the
    /// plain SHA-256 link over its contents and a chosen previous hash.
    static func forgeUnkeyed(_ row: any SQLRow, prevHash: String) throws -> String {
        var event = try event(from: row)
        event.prevHash = prevHash
        return legacyHash(event)
    }
}
