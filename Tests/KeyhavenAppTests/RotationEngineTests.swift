import Foundation
import KeyhavenCore
import KeyhavenProviders
import KeyhavenStorage
import KeyhavenTestSupport
import Synchronization
import Testing

@testable import KeyhavenApp

/// A clock the tests move by hand.
final class TestClock: Sendable {
    private let current = Mutex(Date())
    var now: Date { current.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}

/// The rotation engine against fakes that keep keys for real: due rotations end with a new current credential and
/// the old one retired at the provider; failures undo themselves.
@Suite("Rotation engine", .serialized)
struct RotationEngineTests {
    func withEngine(
        _ kind: TestDatabase,
        _ body: @Sendable (APIHarness, FakeProviders, TestClock, RotationEngine) async throws -> Void
    ) async throws {
        let fakes = try await FakeProviders.start()
        do {
            try await APIHarness.with(
                kind,
                configure: { configuration in
                    var endpoints = fakes.endpoints()
                    let urls = fakes.managementURLs
                    endpoints.services = [
                        .awsIAM: urls.awsIAM, .googleIAM: urls.googleIAM, .azureGraph: urls.azureGraph,
                    ]
                    configuration.providerEndpoints = endpoints
                }
            ) { api in
                let clock = TestClock()
                let engine = RotationEngine(
                    store: api.runtime.rotations, context: api.runtime.verifier.context, logger: api.runtime.logger,
                    now: { clock.now })
                try await body(api, fakes, clock, engine)
            }
        } catch {
            await fakes.stop()
            throw error
        }
        #expect(fakes.unexpected.isEmpty, "\(fakes.unexpected)")
        await fakes.stop()
    }

    func create(_ api: APIHarness, _ type: IntegrationType, _ credentials: Credentials, owner: UUID) async throws
        -> Integration
    {
        let integration = try await api.runtime.integrations.create(
            ownerID: owner, name: "\(type.rawValue) rotated", type: type, config: [:], credentials: credentials,
            actor: .system)
        return try await api.runtime.rotations.setPolicy(
            RotationPolicy(mode: .automatic, everyDays: 1, graceHours: 0), id: integration.id, ownerID: owner,
            actor: .system)
    }

    /// Runs rounds until the integration has no unfinished rotation (bounded).
    func drain(_ engine: RotationEngine, _ api: APIHarness, _ integration: Integration, clock: TestClock) async throws
        -> RotationRecord
    {
        for _ in 0..<12 {
            try await engine.runOnce()
            let latest = try await api.runtime.rotations.rotations(
                integrationID: integration.id, ownerID: integration.ownerID
            ).first
            if let latest, latest.state.isFinished { return latest }
            clock.advance(61)
        }
        throw TestSetupError("the rotation did not finish")
    }

    @Test(
        """
        AWS, Google and Azure: a due rotation ends with a new verified current \
        version, the old credential deleted, and the backend reading the new one
        """,
        arguments: TestDatabase.all)
    func rotates(kind: TestDatabase) async throws {
        try await withEngine(kind) { api, fakes, clock, engine in
            let owner = try await Fixtures.user(in: api.handle.database)
            let service = try await api.serviceToken()
            let cases: [(IntegrationType, Credentials)] = [
                (
                    .aws,
                    .aws(
                        accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret,
                        sessionToken: nil)
                ),
                (.googleCloud, .googleServiceAccount(fakes.googleAccount)),
                (
                    .azure,
                    .azure(
                        tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient,
                        clientSecret: FakeProviders.azureSecret)
                ),
            ]
            var integrations: [(IntegrationType, Integration, Credentials)] = []
            for (type, credentials) in cases {
                integrations.append((type, try await create(api, type, credentials, owner: owner), credentials))
            }
            // Not due yet: nothing happens.
            try await engine.runOnce()
            for (_, integration, _) in integrations {
                #expect(
                    try await api.runtime.rotations.rotations(integrationID: integration.id, ownerID: owner).isEmpty)
            }
            clock.advance(2 * 86400)
            for (type, integration, old) in integrations {
                let rotation = try await drain(engine, api, integration, clock: clock)
                #expect(rotation.state == .done, "\(type): \(rotation.error ?? "")")
                let now = try await api.runtime.integrations.get(id: integration.id, ownerID: owner)
                #expect(now.credentialVersion == 2 && now.status == .connected, "\(type)")
                let read = try await api.request(
                    .get, "/api/integrations/\(integration.id.uuidString.lowercased())/credentials",
                    auth: .bearer(service.token))
                #expect(read.status == .ok)
                #expect(read.json["credential_version"] as? Int == 2)
                for secret in old.secretValues {
                    #expect(!read.text.contains(secret), "\(type): the old credential is gone")
                }
                #expect(!now.rotationDue(now: clock.now), "\(type): a fresh credential is not due")
            }
            #expect(fakes.awsKeys().count == 1 && fakes.awsKeys().first?.id != FakeProviders.awsAccessKeyID)
            #expect(fakes.googleKeyIDs.count == 1 && fakes.googleKeyIDs.first != "fake-key-1")
            #expect(
                fakes.azureSecretKeyIDs.count == 1 && fakes.azureSecretKeyIDs.first != FakeProviders.azureSecretKeyID)
            // No secret, old or new, in the audit trail.
            let auditText = try await api.handle.database.transaction { sql in
                try await sql.raw("SELECT * FROM audit_events").all().map { try SQLAuditLog.eventText($0) }.joined(
                    separator: "\n")
            }
            #expect(
                auditText.contains("integration.rotation.step") && auditText.contains("integration.credentials.rotate"))
            for (_, integration, old) in integrations {
                let (_, new) = try await api.runtime.rotations.credentials(
                    of: try #require(
                        try await api.runtime.rotations.rotations(integrationID: integration.id, ownerID: owner).first),
                    version: 2)
                for secret in old.secretValues + new.secretValues { #expect(!auditText.contains(secret)) }
            }
        }
    }

    @Test(
        """
        a new credential that does not verify is deleted at the \
        provider; the old one stays current and the integration says why
        """,
        arguments: TestDatabase.all)
    func undoes(kind: TestDatabase) async throws {
        try await withEngine(kind) { api, fakes, clock, engine in
            let owner = try await Fixtures.user(in: api.handle.database)
            fakes.refuseRotatedCredentials(true)
            let integration = try await create(
                api, .azure,
                .azure(
                    tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient,
                    clientSecret: FakeProviders.azureSecret),
                owner: owner)
            clock.advance(2 * 86400)
            let rotation = try await drain(engine, api, integration, clock: clock)
            #expect(rotation.state == .failed)
            let now = try await api.runtime.integrations.get(id: integration.id, ownerID: owner)
            #expect(now.credentialVersion == 1)
            #expect(now.status == .error)
            #expect(now.errorMessage?.contains("Automatic rotation failed") == true)
            #expect(
                fakes.azureSecretKeyIDs == [FakeProviders.azureSecretKeyID],
                "the new secret was removed at the provider")
            // Not retried on its own for the same credentials.
            clock.advance(86400)
            try await engine.runOnce()
            #expect(try await api.runtime.rotations.rotations(integrationID: integration.id, ownerID: owner).count == 1)
            // AWS: retried while IAM may still be propagating, then undone.
            let aws = try await create(
                api, .aws,
                .aws(
                    accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret,
                    sessionToken: nil), owner: owner)
            clock.advance(2 * 86400)
            let awsRotation = try await drain(engine, api, aws, clock: clock)
            #expect(awsRotation.state == .failed)
            #expect(fakes.awsKeys().map(\.id) == [FakeProviders.awsAccessKeyID])
        }
    }

    @Test(
        "remind: once the credentials are older than every_days the integration is due, and one audit event says so",
        arguments: TestDatabase.all)
    func reminds(kind: TestDatabase) async throws {
        try await withEngine(kind) { api, _, clock, engine in
            let owner = try await Fixtures.user(in: api.handle.database)
            let integration = try await api.runtime.integrations.create(
                ownerID: owner, name: "reminded", type: .openai, config: [:],
                credentials: .apiKey("sk-test-remind-000000000000"), actor: .system)
            await #expect(throws: KeyhavenError.self) {
                _ = try await api.runtime.rotations.setPolicy(
                    RotationPolicy(mode: .automatic), id: integration.id, ownerID: owner, actor: .system)
            }
            let reminded = try await api.runtime.rotations.setPolicy(
                RotationPolicy(mode: .remind, everyDays: 30), id: integration.id, ownerID: owner, actor: .system)
            #expect(!reminded.rotationDue(now: clock.now))
            clock.advance(31 * 86400)
            #expect(reminded.rotationDue(now: clock.now))
            try await engine.runOnce()
            try await engine.runOnce()
            let events = try await api.runtime.audit.events(
                ownerID: owner, integrationID: integration.id, limit: 50, before: nil)
            #expect(events.filter { $0.action == "integration.rotation.due" }.count == 1)
            await #expect(throws: KeyhavenError.self) {
                _ = try await api.runtime.rotations.request(id: integration.id, ownerID: owner, actor: .system)
            }
        }
    }

    @Test(
        """
        a run that stopped while the provider was making the credential: \
        what it made is removed, and the rotation finishes with one key
        """,
        arguments: TestDatabase.all)
    func resumesCreating(kind: TestDatabase) async throws {
        try await withEngine(kind) { api, fakes, clock, engine in
            let owner = try await Fixtures.user(in: api.handle.database)
            let cases: [(IntegrationType, Credentials, String, () -> [String])] = [
                (
                    .aws,
                    .aws(
                        accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret,
                        sessionToken: nil),
                    FakeProviders.awsAccessKeyID, { fakes.awsKeys().map(\.id) }
                ),
                (.googleCloud, .googleServiceAccount(fakes.googleAccount), "fake-key-1", { fakes.googleKeyIDs }),
                (
                    .azure,
                    .azure(
                        tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient,
                        clientSecret: FakeProviders.azureSecret),
                    FakeProviders.azureSecretKeyID, { fakes.azureSecretKeyIDs }
                ),
            ]
            for (type, old, oldKeyID, keys) in cases {
                let integration = try await create(api, type, old, owner: owner)
                var record = try await api.runtime.rotations.request(
                    id: integration.id, ownerID: owner, actor: .system, now: clock.now)
                // The run that "crashed": it recorded the creating step, and the provider made a credential.
                record.state = .creating
                record.oldKeyID = oldKeyID
                // The provider's clock is the real one (the test clock may be ahead after an earlier drain).
                record.updatedAt = Date()
                try await api.runtime.rotations.save(record)
                let stray = try await Rotators.rotator(for: type)!.create(
                    using: old, tag: record.id.uuidString.lowercased(), in: api.runtime.verifier.context
                ).get()
                #expect(keys().count == 2, "\(type)")
                let finished = try await drain(engine, api, integration, clock: clock)
                #expect(finished.state == .done, "\(type): \(finished.error ?? "")")
                #expect(
                    keys().count == 1 && keys().first != stray.keyID && keys().first != oldKeyID, "\(type): \(keys())")
            }
        }
    }

    @Test("two engines on one database rotate a due integration exactly once", arguments: TestDatabase.all)
    func once(kind: TestDatabase) async throws {
        try await withEngine(kind) { api, fakes, clock, engine in
            let owner = try await Fixtures.user(in: api.handle.database)
            let integration = try await create(
                api, .aws,
                .aws(
                    accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret,
                    sessionToken: nil), owner: owner)
            clock.advance(2 * 86400)
            let other = RotationEngine(
                store: api.runtime.rotations, context: api.runtime.verifier.context, logger: api.runtime.logger,
                now: { clock.now })
            for _ in 0..<6 {
                async let first = engine.runOnce()
                async let second = other.runOnce()
                _ = try await (first, second)
                clock.advance(61)
            }
            let rotations = try await api.runtime.rotations.rotations(integrationID: integration.id, ownerID: owner)
            #expect(rotations.count == 1)
            #expect(rotations.first?.state == .done)
            #expect(fakes.awsKeys().count == 1)
            #expect(try await api.runtime.integrations.get(id: integration.id, ownerID: owner).credentialVersion == 2)
            // Asked for by hand, a second time, it runs again.
            let manual = try await api.runtime.rotations.request(
                id: integration.id, ownerID: owner, actor: .system, now: clock.now)
            await #expect(throws: KeyhavenError.self) {
                _ = try await api.runtime.rotations.request(
                    id: integration.id, ownerID: owner, actor: .system, now: clock.now)
            }
            #expect(manual.state == .requested)
        }
    }
}
