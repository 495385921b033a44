import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenServices
import KeyhavenTestSupport
import Logging
import SQLKit
import Synchronization
import Testing

@testable import KeyhavenDatabase
@testable import KeyhavenStorage

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Credential reads are written in groups; each must keep the guarantees of one audited transaction per read.
@Suite("Grouped credential reads")
struct CredentialReadTests {
    /// Makes every insert into the audit trail fail, as a broken disk or a lost connection would.
    func stopAuditWrites(_ database: Database) async throws {
        try await database.transaction { sql in
            if database.kind == .sqlite {
                try await sql.raw(
                    """
                    CREATE TRIGGER audit_stop BEFORE INSERT ON audit_events \
                    BEGIN SELECT RAISE(ABORT, 'audit unavailable'); END
                    """
                ).run()
            } else {
                try await sql.raw(
                    """
                    CREATE FUNCTION audit_stop() RETURNS trigger AS $$ BEGIN \
                    RAISE EXCEPTION 'audit unavailable'; END $$ LANGUAGE plpgsql
                    """
                ).run()
                try await sql.raw(
                    """
                    CREATE TRIGGER audit_stop BEFORE INSERT ON audit_events \
                    FOR EACH STATEMENT EXECUTE FUNCTION audit_stop()
                    """
                ).run()
            }
        }
    }

    @Test(
        "when the audit write fails, every read in flight answers 503 and returns no credentials",
        arguments: TestDatabase.all)
    func failClosed(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let key = Fixtures.canary("group")
            let id = try await api.openAIIntegration(for: user.session, key: key)
            let service = try await api.serviceToken()
            try await stopAuditWrites(api.handle.database)
            let responses = try await withThrowingTaskGroup(of: APIResponse.self) { group in
                for _ in 0..<24 {
                    group.addTask {
                        try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(responses.count == 24)
            for response in responses {
                #expect(response.status == .serviceUnavailable)
                #expect(!response.text.contains(key))
            }
            let shown = try await api.request(.get, "/api/integrations/\(id)", auth: user.session).json
            #expect(shown["last_used_at"] is NSNull, "no read was recorded as used")
        }
    }

    @Test("a read records the integration's last use once a minute, not in every group", arguments: TestDatabase.all)
    func lastUseOncePerMinute(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            let service = try await api.serviceToken()
            func read() async throws -> String? {
                let response = try await api.request(
                    .get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
                #expect(response.status == .ok)
                return try await api.request(.get, "/api/integrations/\(id)", auth: user.session).json["last_used_at"]
                    as? String
            }
            let first = try #require(try await read())
            try await Task.sleep(for: .milliseconds(20))
            #expect(try await read() == first, "a second read within the minute rewrote the row")
            // A use recorded more than a minute ago (by this or another instance) is recorded again.
            let old = Date().addingTimeInterval(-120)
            try await api.handle.database.transaction { sql in
                try await sql.raw(
                    "UPDATE integrations SET last_used_at = \(bind: old) WHERE id = \(bind: UUID(uuidString: id)!)"
                ).run()
            }
            let stale = try #require(
                try await api.request(.get, "/api/integrations/\(id)", auth: user.session).json["last_used_at"]
                    as? String)
            let later = try #require(try await read())
            #expect(later > stale)
        }
    }

    @Test(
        "concurrent reads of many integrations: each 200 has its own audit event, and the chain verifies",
        arguments: TestDatabase.all)
    func everyReadAudited(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            var created: [String] = []
            for index in 0..<12 {
                created.append(try await api.openAIIntegration(for: user.session, name: "read \(index)"))
            }
            let ids = created
            let service = try await api.serviceToken()
            let served = try await withThrowingTaskGroup(of: [String].self) { group in
                for worker in 0..<16 {
                    group.addTask {
                        var served: [String] = []
                        for round in 0..<6 {
                            let id = ids[(worker + round) % ids.count]
                            let response = try await api.request(
                                .get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
                            if response.status == .ok { served.append(id) }
                        }
                        return served
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(served.count == 96)
            var audited: [String: Int] = [:]
            for row in try await api.handle.database.transaction({ sql in
                try await sql.raw(
                    "SELECT integration_id FROM audit_events WHERE action = 'credentials.read' AND outcome = 'success'"
                ).all()
            }) {
                audited[try row.decode(column: "integration_id", as: UUID.self).uuidString.lowercased(), default: 0] +=
                    1
            }
            #expect(audited == Dictionary(grouping: served, by: { $0 }).mapValues(\.count))
            // Reads that arrived together were written together: fewer commits than reads.
            let commits = try await api.handle.database.transaction { sql in
                try await sql.raw("SELECT COUNT(DISTINCT at) AS n FROM audit_events WHERE action = 'credentials.read'")
                    .first()?
                    .decode(column: "n", as: Int.self) ?? 0
            }
            #expect(commits < served.count, "\(commits) commits for \(served.count) reads")
            #expect(try await api.runtime.audit.verify().isIntact)
        }
    }

    @Test(
        """
        on PostgreSQL a read decided and opened in its first statement is decided again when the integration \
        changed before its write: disabled meanwhile, it is refused and audited as such; and it is written after \
        events another writer appended meanwhile, the chain intact
        """,
        arguments: TestDatabase.all.filter { $0 == .postgres })
    func changedWhileQueued(_ kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let first = try await api.openAIIntegration(for: user.session, key: "sk-test-ahead-0000000001")
            let second = try await api.openAIIntegration(for: user.session, key: "sk-test-ahead-0000000002")
            let runtime = api.runtime
            let database = api.handle.database
            let actor = AuditActor(kind: .service, id: nil)
            /// Reads `id` while a transaction holds what its write needs (the integration's row and the audit
            /// lock), and, once the read is opened ahead, runs `change` in it.
            func readAcross(
                _ id: String, _ change: @escaping @Sendable (any SQLDatabase, UUID) async throws -> Void
            ) async throws -> Result<Credentials, KeyhavenError> {
                let opened = database.timings.snapshot.phases[.openSecrets]?.count ?? 0
                let integration = try #require(UUID(uuidString: id))
                let holding = Atomic(false)
                let held = Task {
                    try await database.transaction { sql in
                        try await sql.raw("SELECT id FROM integrations WHERE id = \(bind: integration) FOR UPDATE")
                            .run()
                        try await sql.raw(Database.advisoryLock("audit")).run()
                        holding.store(true, ordering: .releasing)
                        // Until the read was opened ahead (bounded: 10 s).
                        for _ in 0..<1000 where (database.timings.snapshot.phases[.openSecrets]?.count ?? 0) == opened {
                            try await Task.sleep(for: .milliseconds(10))
                        }
                        try await change(sql, integration)
                    }
                }
                // The read queues behind what the held transaction has (bounded: 10 s).
                for _ in 0..<1000 where !holding.load(ordering: .acquiring) {
                    try await Task.sleep(for: .milliseconds(10))
                }
                let result: Result<Credentials, KeyhavenError>
                do {
                    result = .success(
                        try await runtime.integrations.readCredentials(id: integration, actor: actor) { target in
                            CredentialAccess.decide(.read, scope: nil, target)
                        }.1)
                } catch let error as KeyhavenError {
                    result = .failure(error)
                }
                try await held.value
                return result
            }
            do {
                // Unhindered, a read is two statements: one that reads, one that checks and writes.
                let before = database.timings.snapshot.phases
                _ = try await runtime.integrations.readCredentials(
                    id: try #require(UUID(uuidString: second)), actor: actor
                ) {
                    CredentialAccess.decide(.read, scope: nil, $0)
                }
                let after = database.timings.snapshot.phases
                for phase in [WriterTimings.Phase.readRows, .checkedWrite] {
                    #expect((after[phase]?.count ?? 0) - (before[phase]?.count ?? 0) == 1, "\(phase)")
                }
            }
            let disabled = try await readAcross(first) { sql, id in
                try await sql.raw("UPDATE integrations SET enabled = \(bind: false) WHERE id = \(bind: id)").run()
            }
            guard case .failure(.integrationDisabled) = disabled else {
                Issue.record("a read of an integration disabled before its write must be refused: \(disabled)")
                return
            }
            let events = try await runtime.audit.events(
                ownerID: user.id, integrationID: UUID(uuidString: first), integrationsOnly: true, limit: 5, before: nil)
            #expect(events.first?.action == "credentials.read" && events.first?.outcome == "denied")
            // Another writer extends the chain between the read's first look and its write.
            let audit = runtime.audit
            let afterOther = try await readAcross(second) { sql, _ in
                try await audit.append(
                    AuditEntry(actor: actor, action: .login, outcome: .success, ownerID: user.id), on: sql)
            }
            guard case .success(.apiKey(let key)) = afterOther, key == "sk-test-ahead-0000000002" else {
                Issue.record("a read across another writer's event must succeed")
                return
            }
            guard case .intact = try await audit.verify() else {
                Issue.record("the chain must verify")
                return
            }
        }
    }

    @Test("a server killed with SIGKILL during concurrent reads has an audit event for every read it answered 200")
    func killedMidway() async throws {
        let binary = try KeyhavenBinary()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let masterKey = Fixtures.masterKeyText()
        let databasePath = directory.path + "/keyhaven.sqlite"
        let configuration = KeyhavenConfiguration(
            database: .sqlite(path: databasePath),
            keyring: KeyringSource(environmentKey: try MasterKey(id: "primary", base64: masterKey)))
        // Seed through the library, as a server would have written it.
        let runtime = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: false, logger: Logger(label: "test"))
        let owner = try await Fixtures.user(in: runtime.database)
        var created: [UUID] = []
        for index in 0..<400 {
            created.append(
                try await runtime.integrations.create(
                    ownerID: owner, name: "killed \(index)", type: .openai, config: [:],
                    credentials: .apiKey("sk-killed-\(index)-0000000000000000"), actor: .system
                ).id)
        }
        let (token, _) = try await runtime.tokens.create(
            kind: .service, userID: nil, name: "backend", scopes: [.credentialsRead], expiresAt: nil,
            audit: AuditEntry(actor: .operator, action: .tokenCreate))
        await runtime.shutdown()
        let ids = created

        let port = try FakeProviders.freePort()
        let server = try binary.start(
            ["serve", "--port", String(port)],
            environment: [
                "KEYHAVEN_DATABASE_URL": "sqlite://\(databasePath)", "KEYHAVEN_MASTER_KEY": masterKey,
                "KEYHAVEN_VERIFICATION_WORKER": "false",
            ],
            in: directory.path)
        #expect(await server.waitForStderr { $0.contains("Server started") }, "\(server.stderr)")
        let progress = ReadProgress()
        let session = URLSession(configuration: .ephemeral)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    while true {
                        let index = progress.next.withLock { value -> Int in
                            defer { value += 1 }
                            return value
                        }
                        guard index < ids.count else { return }
                        var request = URLRequest(
                            url: URL(string: "http://127.0.0.1:\(port)/api/integrations/\(ids[index])/credentials")!)
                        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
                        request.timeoutInterval = 5
                        guard let (_, response) = try? await session.data(for: request) else { return }
                        if (response as? HTTPURLResponse)?.statusCode == 200 {
                            progress.answered.withLock { $0.append(ids[index]) }
                        }
                    }
                }
            }
            group.addTask {
                // Kill once some reads have been answered, while others are in flight.
                for _ in 0..<3000 where progress.answered.withLock({ $0.count }) < 60 {
                    try? await Task.sleep(for: .milliseconds(10))
                }
                server.signal(SIGKILL)
            }
        }
        _ = await server.wait(timeout: .seconds(20))
        let served = Set(progress.answered.withLock { $0 })
        #expect(served.count >= 60, "the kill must land while reads are being answered")

        let after = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: false, logger: Logger(label: "test"))
        let audited = try await after.database.withConnection { sql in
            try await sql.raw(
                "SELECT integration_id FROM audit_events WHERE action = 'credentials.read' AND outcome = 'success'"
            ).all()
                .map { try $0.decode(column: "integration_id", as: UUID.self) }
        }
        #expect(
            served.isSubset(of: Set(audited)), "\(served.subtracting(audited).count) answered reads have no audit event"
        )
        #expect(try await after.audit.verify().isIntact)
        await after.shutdown()
    }
}

/// The statements of the hot paths are prepared once per connection and then only bound and stepped.
@Suite("SQLite statement cache")
struct StatementCacheTests {
    @Test("creates, reads, lists, token checks and credential reads never make SQLite prepare a cached statement again")
    func noReprepare() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            let pat = try await api.personalToken(for: user, scopes: ["integrations:read", "integrations:write"])
            let service = try await api.serviceToken()
            // Migrations change the schema, which makes SQLite prepare their own statements again; from here on
            // nothing may.
            let before = api.handle.database.repreparedStatements
            var ids: [String] = []
            for index in 0..<6 {
                ids.append(try await api.openAIIntegration(for: .bearer(pat.token), name: "cached \(index)"))
            }
            for (index, id) in ids.enumerated() {
                #expect(try await api.request(.get, "/api/integrations/\(id)", auth: .bearer(pat.token)).status == .ok)
                #expect(try await api.request(.get, "/api/integrations/\(id)", auth: user.session).status == .ok)
                #expect(
                    try await api.request(.get, "/api/integrations?limit=\(index + 1)", auth: .bearer(pat.token)).status
                        == .ok)
                #expect(
                    try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
                        .status == .ok)
                #expect(
                    try await api.request(.get, "/api/integrations/\(UUID())", auth: .bearer(pat.token)).status
                        == .notFound)
            }
            #expect(api.handle.database.repreparedStatements == before, "prepared again while serving")
        }
    }
}

/// Which reads a client got answered, and which integration to read next.
final class ReadProgress: Sendable {
    let answered = Mutex<[UUID]>([])
    let next = Mutex(0)
}
