import Foundation
import HTTPTypes
import KeyhavenApp
import KeyhavenCore
import KeyhavenProviders
import KeyhavenStorage
import KeyhavenTestSupport
import SQLKit
import Testing

@Suite("Verification lifecycle")
struct VerificationTests {
    func withFakes(_ body: (FakeProviders) async throws -> Void) async throws {
        let fakes = try await FakeProviders.start()
        do { try await body(fakes) } catch {
            await fakes.stop()
            throw error
        }
        #expect(fakes.unexpected.isEmpty, "\(fakes.unexpected)")
        await fakes.stop()
    }

    @Test(
        "create → verifying → connected; bad credentials → verifying → error; disabled is left alone",
        arguments: TestDatabase.all)
    func lifecycle(kind: TestDatabase) async throws {
        try await withFakes { fakes in
            try await APIHarness.with(
                kind,
                configure: {
                    $0.providerEndpoints = fakes.endpoints()
                    $0.runVerificationWorker = true
                }
            ) { api in
                let user = try await api.user()
                let id = try await api.openAIIntegration(for: user.session, key: FakeProviders.openAIKey)
                let connected = try await api.settled(id, auth: user.session)
                #expect(connected["status"] as? String == "connected")
                #expect(connected["last_verified_at"] is String)
                #expect(connected["error_message"] is NSNull)

                // New, wrong credentials: verifying at once, then error with a message that keeps no part of the key.
                // No run of hex digits, which hashes would match by chance.
                let badKey = "sk-echo-canary-zqxwvtsrpmnjlh"
                let updated = try await api.request(
                    .put, "/api/integrations/\(id)", auth: user.session, json: ["credentials": badKey])
                #expect(updated.json["status"] as? String == "verifying")
                let failed = try await api.settled(id, auth: user.session)
                #expect(failed["status"] as? String == "error")
                let message = try #require(failed["error_message"] as? String)
                #expect(message.hasPrefix("The provider rejected the credentials."))
                let auditText = try await api.handle.database.transaction { sql in
                    try await sql.raw("SELECT * FROM audit_events").all().map { try SQLAuditLog.eventText($0) }.joined(
                        separator: "\n")
                }
                let characters = Array(badKey)
                for start in 0...(characters.count - 5) {
                    let piece = String(characters[start..<start + 5])
                    #expect(!message.contains(piece) && !auditText.contains(piece), "\(piece)")
                }
                let verifications = try await api.runtime.audit.events(
                    ownerID: user.id, integrationID: UUID(uuidString: id)!, limit: 20, before: nil
                )
                .filter { $0.action == "integration.verify" }.map(\.outcome)
                #expect(verifications.sorted() == ["failure", "success"])

                // Disabled: the worker leaves it alone, even with new credentials.
                _ = try await api.request(
                    .patch, "/api/integrations/\(id)", auth: user.session,
                    json: ["enabled": false, "credentials": FakeProviders.openAIKey])
                try await Task.sleep(for: .seconds(1))
                let disabled = try await api.request(.get, "/api/integrations/\(id)", auth: user.session).json
                #expect(disabled["status"] as? String == "disabled")
                #expect(try await VerificationWorker(runner: api.runtime.verifier).runOnce() == 0)
            }
        }
    }

    @Test(
        "integrations left in verifying when the server stopped are verified after a restart",
        arguments: TestDatabase.all)
    func resumesAfterRestart(kind: TestDatabase) async throws {
        try await withFakes { fakes in
            let handle = try await kind.make()
            defer { Task { await handle.close() } }
            let keyring = Fixtures.environmentKeyring()
            var configuration = KeyhavenConfiguration(database: handle.location, keyring: keyring)
            configuration.providerEndpoints = fakes.endpoints()
            configuration.egressAllowPrivate = true
            // First run: no worker; the integrations stay in verifying.
            var ids: [(UUID, UUID)] = []
            do {
                configuration.runVerificationWorker = false
                let runtime = try await KeyhavenRuntime.open(
                    configuration, allowKeyringCreation: false, logger: .init(label: "test"), database: handle.database)
                let owner = try await Fixtures.user(in: handle.database)
                for (index, key) in [FakeProviders.openAIKey, "sk-not-a-good-key-00000000"].enumerated() {
                    let integration = try await runtime.integrations.create(
                        ownerID: owner, name: "pending \(index)", type: .openai, config: [:], credentials: .apiKey(key),
                        actor: .system)
                    ids.append((integration.id, owner))
                }
                try await runtime.http.shutdown()
            }
            // Second run, with the worker: it picks them up.
            configuration.runVerificationWorker = true
            let runtime = try await KeyhavenRuntime.open(
                configuration, allowKeyringCreation: false, logger: .init(label: "test"), database: handle.database)
            let worker = VerificationWorker(runner: runtime.verifier)
            #expect(try await worker.runOnce() == 2)
            let statuses = try await ids.asyncMap { try await runtime.integrations.get(id: $0.0, ownerID: $0.1).status }
            #expect(statuses == [.connected, .error])
            try await runtime.http.shutdown()
        }
    }

    @Test(
        "with several workers on one database, each integration is verified exactly once", arguments: TestDatabase.all)
    func claimsOnce(kind: TestDatabase) async throws {
        try await withFakes { fakes in
            try await APIHarness.with(kind, configure: { $0.providerEndpoints = fakes.endpoints() }) { api in
                let owner = try await Fixtures.user(in: api.handle.database)
                for index in 0..<24 {
                    _ = try await api.runtime.integrations.create(
                        ownerID: owner, name: "bulk \(index)", type: .anthropic, config: [:],
                        credentials: .apiKey(FakeProviders.anthropicKey), actor: .system)
                }
                let workers = (0..<3).map { _ in VerificationWorker(runner: api.runtime.verifier, concurrency: 3) }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in workers {
                        group.addTask { while try await worker.runOnce() > 0 {} }
                    }
                    try await group.waitForAll()
                }
                let counts = try await api.handle.database.transaction { sql in
                    try await sql.raw(
                        """
                        SELECT integration_id, COUNT(*) AS n FROM audit_events \
                        WHERE action = 'integration.verify' GROUP BY integration_id
                        """
                    ).all()
                        .map { try $0.decode(column: "n", as: Int.self) }
                }
                #expect(counts.count == 24)
                #expect(counts.allSatisfy { $0 == 1 })
            }
        }
    }

    @Test(
        "a result for credentials replaced while the check ran is not recorded as the new credentials' status",
        arguments: TestDatabase.all)
    func supersededResult(kind: TestDatabase) async throws {
        try await withFakes { fakes in
            try await APIHarness.with(kind, configure: { $0.providerEndpoints = fakes.endpoints() }) { api in
                let user = try await api.user()
                let id = try await api.openAIIntegration(for: user.session, key: FakeProviders.openAIKey)
                let jobs = try await api.runtime.integrations.claimForVerification(limit: 10, lease: .seconds(60))
                #expect(jobs.count == 1)
                // The user rotates the credentials while the (good) old ones are being checked.
                _ = try await api.request(
                    .put, "/api/integrations/\(id)", auth: user.session,
                    json: ["credentials": "sk-replaced-key-000000000000"])
                _ = try await api.runtime.verifier.run(jobs[0], action: .integrationVerify, actor: .system)
                let shown = try await api.request(.get, "/api/integrations/\(id)", auth: user.session).json
                #expect(
                    shown["status"] as? String == "verifying",
                    "the old credentials' success must not mark the new ones connected")
                #expect(shown["credential_version"] as? Int == 2)
                let event = try await api.runtime.audit.events(
                    ownerID: user.id, integrationID: UUID(uuidString: id)!, limit: 1, before: nil
                ).first
                #expect(event?.action == "integration.verify" && event?.detail.contains("\"superseded\":true") == true)
                // The lease was cleared, so the new version is claimed at once.
                let next = try await api.runtime.integrations.claimForVerification(limit: 10, lease: .seconds(60))
                #expect(next.map(\.integration.credentialVersion) == [2])
            }
        }
    }

    @Test(
        "the test route runs the check now, in the caller's language, rate limited per user",
        arguments: TestDatabase.all)
    func testRoute(kind: TestDatabase) async throws {
        try await withFakes { fakes in
            try await APIHarness.with(
                kind,
                configure: {
                    $0.providerEndpoints = fakes.endpoints()
                    $0.checkRateLimit = .init(perUser: 8)
                }
            ) { api in
                let user = try await api.user()
                let created = try await api.request(
                    .post, "/api/integrations", auth: user.session,
                    json: [
                        "name": "aws", "type": "aws",
                        "credentials": [
                            "access_key_id": FakeProviders.awsAccessKeyID, "secret_access_key": FakeProviders.awsSecret,
                        ],
                        "config": ["region": "eu-west-1"],
                    ])
                let id = try #require(created.json["id"] as? String)
                let result = try await api.request(
                    .post, "/api/integrations/\(id)/test", auth: user.session,
                    headers: [.acceptLanguage: "es-ES,es;q=0.9"])
                #expect(result.status == .ok)
                #expect(result.json["status"] as? String == "connected")
                #expect(result.json["message"] as? String == "Conectado.")
                #expect(result.json["checked_at"] is String)
                #expect(result.json["latency_ms"] is NSNumber)
                let details = try #require(result.json["details"] as? [String: Any])
                #expect(details["arn"] as? String == "arn:aws:iam::123456789012:user/keyhaven")
                #expect(!result.text.contains(FakeProviders.awsSecret))
                let shown = try await api.request(.get, "/api/integrations/\(id)", auth: user.session).json
                #expect(shown["status"] as? String == "connected")
                let events = try await api.runtime.audit.events(
                    ownerID: user.id, integrationID: UUID(uuidString: id)!, limit: 10, before: nil)
                #expect(events.first?.action == "integration.test")

                let stranger = try await api.user()
                #expect(
                    try await api.request(.post, "/api/integrations/\(id)/test", auth: stranger.session).status
                        == .notFound)

                var last = result
                for _ in 0..<10 {
                    last = try await api.request(.post, "/api/integrations/\(id)/test", auth: user.session)
                }
                #expect(last.status == .tooManyRequests)
                #expect(last.headers[.retryAfter] != nil)

                let metrics = try await api.metrics()
                #expect(metrics.text.contains(#"keyhaven_verifications_total{provider="aws",outcome="connected"}"#))
                #expect(metrics.text.contains("keyhaven_verification_duration_seconds"))
                #expect(!metrics.text.contains(user.email))
                // Requests by route template, never by id.
                #expect(
                    metrics.text.contains(
                        #"keyhaven_http_requests_total{method="POST",route="/api/integrations/{id}/test",status="200"}"#
                    ))
                #expect(metrics.text.contains(#"route="/api/integrations/{id}/test",status="429"}"#))
                #expect(!metrics.text.contains(id))
            }
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
