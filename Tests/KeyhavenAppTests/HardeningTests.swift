import Foundation
import HTTPTypes
import KeyhavenCore
import KeyhavenProviders
import KeyhavenServices
import KeyhavenStorage
import KeyhavenTestSupport
import SQLKit
import Testing

@testable import KeyhavenApp

/// Findings of the security review, each as the scenario that used to go wrong.
@Suite("Hardening")
struct HardeningTests {
    nonisolated(unsafe) static let awsKeys: [String: Any] = [
        "access_key_id": "AKIAQWERTYUIOPASDFGH", "secret_access_key": String(repeating: "a", count: 40),
    ]

    /// Runs the background verifier until nothing is left to claim.
    func drain(_ api: APIHarness) async throws {
        let worker = VerificationWorker(runner: api.runtime.verifier)
        for _ in 0..<20 where try await worker.runOnce() > 0 {}
    }

    @Test(
        "an AWS region with a trailing newline or a non-ASCII digit is refused with the field named",
        arguments: TestDatabase.all)
    func hostileRegion(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            for region in [
                "us-east-1\n", "us-east-\u{0663}", "us-east-\u{FF11}", "\u{0075}s-east-1\u{200F}", "us-east-1 ",
            ] {
                let response = try await api.request(
                    .post, "/api/integrations", auth: user.session,
                    json: [
                        "name": "aws \(UUID())", "type": "aws", "credentials": Self.awsKeys,
                        "config": ["region": region],
                    ])
                #expect(response.status == .unprocessableContent, "\(region.debugDescription): \(response.text)")
                #expect(response.fields.keys.sorted() == ["config.region"])
            }
            #expect(
                (try await api.request(.get, "/api/integrations", auth: user.session).json["integrations"] as? [Any])?
                    .isEmpty == true)
            let accepted = try await api.request(
                .post, "/api/integrations", auth: user.session,
                json: [
                    "name": "aws gov", "type": "aws", "credentials": Self.awsKeys,
                    "config": ["region": "us-gov-west-1"],
                ])
            #expect(accepted.status == .created)
        }
    }

    @Test(
        """
        a row stored with a hostile region before validation was \
        tightened gets a recorded outcome, and the worker goes on
        """,
        arguments: TestDatabase.all)
    func storedHostileRows(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let owner = try await Fixtures.user(in: api.handle.database)
            let aws = Credentials.aws(
                accessKeyID: "AKIAQWERTYUIOPASDFGH", secretAccessKey: String(repeating: "a", count: 40),
                sessionToken: nil)
            var ids: [UUID] = []
            let configs: [[String: JSONValue]] = [
                ["region": "us-east-1\n"], ["region": "us-east-\u{0663}"], ["region": .number(7)], [:],
            ]
            for (index, config) in configs.enumerated() {
                let integration = try await api.runtime.integrations.create(
                    ownerID: owner, name: "stored \(index)", type: .aws, config: config, credentials: aws,
                    actor: .system)
                ids.append(integration.id)
            }
            // Credentials that passed an older rule (a space in an Azure secret) still open, and are reported.
            let azure = try await api.runtime.integrations.create(
                ownerID: owner, name: "old azure", type: .azure, config: [:],
                credentials: .azure(
                    tenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47", clientID: "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
                    clientSecret: "old secret\nwith a line break"),
                actor: .system)
            try await drain(api)
            for id in ids.prefix(3) + [azure.id] {
                let integration = try await api.runtime.integrations.get(id: id, ownerID: owner)
                #expect(integration.status == .error, "\(integration.name)")
                #expect(
                    integration.errorMessage?.hasPrefix("The provider gave an unexpected response.") == true,
                    "\(integration.errorMessage ?? "")")
            }
            // The one with a valid (default) region was checked for real: nothing listens, so it is unreachable.
            #expect(
                try await api.runtime.integrations.get(id: ids[3], ownerID: owner).errorMessage?.hasPrefix(
                    "The provider could not be reached") == true)
            let service = try await api.serviceToken()
            let read = try await api.request(
                .get, "/api/integrations/\(azure.id.uuidString.lowercased())/credentials", auth: .bearer(service.token))
            #expect(read.status == .ok)
            #expect(read.text.contains("old secret"))
            #expect(try await api.request(.get, "/healthz").status == .ok)
        }
    }

    @Test("a check that never finishes is recorded as unreachable after the deadline, and the worker goes on")
    func hungCheck() async throws {
        let fakes = try await FakeProviders.start()
        defer { Task { await fakes.stop() } }
        try await APIHarness.with(
            .sqlite,
            configure: {
                $0.providerEndpoints = fakes.endpoints(prefix: "/hang")
                $0.verificationTimeout = .seconds(1)
            }
        ) { api in
            let owner = try await Fixtures.user(in: api.handle.database)
            let integration = try await api.runtime.integrations.create(
                ownerID: owner, name: "hangs", type: .openai, config: [:],
                credentials: .apiKey(FakeProviders.openAIKey), actor: .system)
            try await drain(api)
            let checked = try await api.runtime.integrations.get(id: integration.id, ownerID: owner)
            #expect(checked.status == .error)
            #expect(checked.errorMessage?.hasPrefix("The provider could not be reached") == true)
        }
    }

    @Test(
        "the worker's backstop deadline gives up on work that ignores cancellation, and passes a result through",
        .timeLimit(.minutes(1)))
    func deadline() async throws {
        // Work that cannot be cancelled: it ends only when the test opens the gate, after the deadline has answered.
        // Were the caller to wait for it, this test would never finish.
        let gate = Waiter<Int>()
        let stuck: Int? = await VerificationRunner.withDeadline(.milliseconds(200)) {
            await withCheckedContinuation { gate.set($0) }
        }
        #expect(stuck == nil)
        var opened = false
        for _ in 0..<1_000 where !opened {
            opened = gate.resume(returning: 1)
            if !opened { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(opened, "the stuck work was started")
        #expect(await VerificationRunner.withDeadline(.seconds(5)) { 42 } == 42)
    }

    @Test(
        "an integration whose check never records a result backs off and is given up on after five attempts",
        arguments: TestDatabase.all)
    func backoff(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let owner = try await Fixtures.user(in: api.handle.database)
            let integration = try await api.runtime.integrations.create(
                ownerID: owner, name: "crashes", type: .openai, config: [:],
                credentials: .apiKey("sk-test-0000000000000000000"), actor: .system)
            var leases: [Double] = []
            for _ in 0..<SQLIntegrationStore.maxVerificationAttempts {
                // Claimed, then the process "dies" before recording anything.
                let jobs = try await api.runtime.integrations.claimForVerification(limit: 10, lease: .seconds(60))
                #expect(jobs.map(\.integration.id) == [integration.id])
                #expect(
                    try await api.runtime.integrations.claimForVerification(limit: 10, lease: .seconds(60)).isEmpty,
                    "leased")
                let until = try await api.handle.database.transaction { sql in
                    try await sql.raw(
                        "SELECT verify_claimed_until FROM integrations WHERE id = \(bind: integration.id)"
                    ).first()?
                    .decode(column: "verify_claimed_until", as: Date.self)
                }
                leases.append((until ?? Date()).timeIntervalSinceNow)
                try await api.handle.database.transaction { sql in
                    try await sql.raw(
                        "UPDATE integrations SET verify_claimed_until = \(bind: Date().addingTimeInterval(-1))"
                    ).run()
                }
            }
            #expect(zip(leases, leases.dropFirst()).allSatisfy { $1 > $0 * 1.5 }, "each retry waits longer: \(leases)")
            #expect(try await api.runtime.integrations.claimForVerification(limit: 10, lease: .seconds(60)).isEmpty)
            let given = try await api.runtime.integrations.get(id: integration.id, ownerID: owner)
            #expect(given.status == .error)
            #expect(given.errorMessage?.contains("after 5 attempts") == true)
            let events = try await api.runtime.audit.events(
                ownerID: owner, integrationID: integration.id, limit: 5, before: nil)
            #expect(events.first?.action == "integration.verify" && events.first?.detail.contains("gave_up") == true)
        }
    }

    @Test(
        """
        a disabled integration's credentials are refused with \
        409, a disabled owner's with 403, both audited as denied
        """,
        arguments: TestDatabase.all)
    func disabledMeansDisabled(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            let service = try await api.serviceToken()
            let read = try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
            #expect(read.status == .ok)
            #expect(read.json["status"] as? String == "verifying")

            _ = try await api.request(.patch, "/api/integrations/\(id)", auth: user.session, json: ["enabled": false])
            let refused = try await api.request(
                .get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
            #expect(refused.status == .conflict)
            #expect((refused.json["error"] as? [String: Any])?["code"] as? String == "integration_disabled")
            #expect(!refused.text.contains("sk-test"))

            _ = try await api.request(.patch, "/api/integrations/\(id)", auth: user.session, json: ["enabled": true])
            #expect(
                try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token)).status
                    == .ok)
            let pat = try await api.personalToken(for: user, scopes: ["integrations:read"])
            #expect(try await api.request(.get, "/api/integrations/\(id)", auth: .bearer(pat.token)).status == .ok)
            try await api.handle.database.transaction { sql in
                try await sql.raw("UPDATE users SET disabled_at = \(bind: Date()) WHERE id = \(bind: user.id)").run()
            }
            #expect(
                try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token)).status
                    == .forbidden)
            // The user's own token dies with the account.
            #expect(
                try await api.request(.get, "/api/integrations/\(id)", auth: .bearer(pat.token)).status == .unauthorized
            )

            let reasons = try await api.runtime.audit.events(
                ownerID: user.id, integrationID: UUID(uuidString: id), limit: 20, before: nil
            )
            .filter { $0.action == "credentials.read" && $0.outcome == "denied" }.map(\.detail)
            #expect(reasons == [#"{"reason":"owner_disabled"}"#, #"{"reason":"integration_disabled"}"#])
        }
    }

    @Test(
        """
        creates, credential changes and tests share a per-user budget \
        of provider checks: 429 with Retry-After, nothing stored
        """,
        arguments: TestDatabase.all)
    func checkBudget(kind: TestDatabase) async throws {
        try await APIHarness.with(kind, configure: { $0.checkRateLimit = .init(perUser: 3) }) { api in
            let user = try await api.user()
            let first = try await api.openAIIntegration(for: user.session, name: "one")
            #expect(
                try await api.request(
                    .put, "/api/integrations/\(first)", auth: user.session,
                    json: ["credentials": "sk-test-another-key-000000"]
                ).status == .ok)
            // A rename is not a check.
            #expect(
                try await api.request(.put, "/api/integrations/\(first)", auth: user.session, json: ["name": "renamed"])
                    .status == .ok)
            #expect(try await api.request(.post, "/api/integrations/\(first)/test", auth: user.session).status == .ok)
            let limited = try await api.request(
                .post, "/api/integrations", auth: user.session,
                json: [
                    "name": "two", "type": "openai", "credentials": "sk-test-0000000000000000000",
                ])
            #expect(limited.status == .tooManyRequests)
            #expect(limited.headers[.retryAfter].flatMap { Int($0) }.map { $0 > 0 } == true)
            #expect(
                (try await api.request(.get, "/api/integrations", auth: user.session).json["integrations"] as? [Any])?
                    .count == 1)
            #expect(
                try await api.request(.post, "/api/integrations/\(first)/test", auth: user.session).status
                    == .tooManyRequests)
            // Another user has a budget of their own.
            let other = try await api.user()
            _ = try await api.openAIIntegration(for: other.session)
        }
    }

    @Test(
        """
        on PostgreSQL a create counts its provider check in its own transaction: one commit, and a create refused \
        (its name taken) spends none of the budget
        """,
        arguments: TestDatabase.all.filter { $0 == .postgres })
    func checkCountedWithTheCreate(kind: TestDatabase) async throws {
        try await APIHarness.with(kind, configure: { $0.checkRateLimit = .init(perUser: 2) }) { api in
            let user = try await api.user()
            func create(_ name: String) async throws -> HTTPResponse.Status {
                try await api.request(
                    .post, "/api/integrations", auth: user.session,
                    json: ["name": name, "type": "openai", "credentials": "sk-test-0000000000000000000"]
                ).status
            }
            #expect(try await create("one") == .created)
            for _ in 0..<3 { #expect(try await create("one") == .conflict) }
            #expect(try await create("two") == .created)
            #expect(try await create("three") == .tooManyRequests)
            let rows = try await api.handle.database.withConnection { sql in
                try await sql.raw("SELECT count FROM rate_limits").all().map {
                    try $0.decode(column: "count", as: Int.self)
                }
            }
            // The refused third check rolled back with its create: the counter holds the two that were made.
            #expect(rows == [2])
        }
    }

    @Test(
        """
        a stored row whose type is not an id, or whose status is unknown, is an error, not a default; a type the \
        catalog no longer has is shown as stored, and checking it says why
        """, arguments: TestDatabase.all)
    func strictRows(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            func store(_ column: String, _ value: String) async throws {
                let row = UUID(uuidString: id)
                try await api.handle.database.transaction { sql in
                    let query: SQLQueryString =
                        "UPDATE integrations SET \(ident: column) = \(bind: value) WHERE id = \(bind: row)"
                    try await sql.raw(query).run()
                }
            }
            for (column, value) in [("type", "Mystery Provider"), ("type", "x"), ("status", "pondering")] {
                try await store(column, value)
                let response = try await api.request(.get, "/api/integrations/\(id)", auth: user.session)
                #expect(response.status == .internalServerError, "\(value)")
                #expect(!response.text.contains("openai"))
                try await store(column, column == "type" ? "openai" : "connected")
            }
            // An operator removed the provider from the catalog: the integration is still listed, as stored, and a
            // check names the reason instead of calling anyone.
            try await store("type", "retired_provider")
            let kept = try await api.request(.get, "/api/integrations/\(id)", auth: user.session)
            #expect(kept.status == .ok && kept.json["type"] as? String == "retired_provider")
            let tested = try await api.request(.post, "/api/integrations/\(id)/test", auth: user.session)
            #expect(tested.json["status"] as? String == "error", "\(tested.text)")
            #expect((tested.json["error_message"] as? String ?? "").contains("catalog"), "\(tested.text)")
        }
    }

    @Test(
        "reads, edits and verification results on the same integrations, concurrently, never deadlock",
        arguments: TestDatabase.all)
    func lockOrder(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let owner = try await Fixtures.user(in: api.handle.database)
            var integrations: [Integration] = []
            for index in 0..<3 {
                integrations.append(
                    try await api.runtime.integrations.create(
                        ownerID: owner, name: "contended \(index)", type: .openai, config: [:],
                        credentials: .apiKey("sk-test-contended-\(index)-0000000000"), actor: .system))
            }
            let store = api.runtime.integrations
            let record = VerificationRecord(
                outcome: .connected, errorMessage: nil, details: [:], checkedAt: Date(), latency: .milliseconds(3))
            let failures = try await withThrowingTaskGroup(of: [String].self) { group in
                for integration in integrations {
                    group.addTask {
                        var failures: [String] = []
                        for _ in 0..<20 {
                            do {
                                _ = try await store.readCredentials(id: integration.id, actor: .system) {
                                    CredentialAccess.decide(.read, scope: nil, $0)
                                }
                            } catch { failures.append("read: \(error)") }
                        }
                        return failures
                    }
                    group.addTask {
                        var failures: [String] = []
                        for round in 0..<20 {
                            do {
                                _ = try await store.update(
                                    id: integration.id, ownerID: owner,
                                    changes: IntegrationChanges(config: round % 2 == 0 ? ["project": "proj_a"] : [:]),
                                    actor: .system)
                            } catch { failures.append("update: \(error)") }
                        }
                        return failures
                    }
                    group.addTask {
                        var failures: [String] = []
                        for _ in 0..<20 {
                            do {
                                try await store.recordVerification(
                                    record, for: integration, action: .integrationVerify, actor: .system)
                            } catch { failures.append("verification: \(error)") }
                        }
                        return failures
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(failures.isEmpty, "\(failures.prefix(3))")
            #expect(try await api.runtime.audit.verify().isIntact)
        }
    }
}

extension AuditVerification {
    /// Whether every link of the chain held.
    var isIntact: Bool {
        if case .intact = self { true } else { false }
    }
}
