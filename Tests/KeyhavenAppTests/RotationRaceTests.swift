import Foundation
import KeyhavenCore
import KeyhavenProviders
import KeyhavenTestSupport
import SQLKit
import Testing

@testable import KeyhavenApp
@testable import KeyhavenStorage

/// Rotations meeting the other things that change an integration: a move, a delete, replaced credentials, and a
/// provider that will not delete. Against Microsoft Graph's fake, which keeps the application's secrets for real.
extension RotationEngineTests {
    static let azure = Credentials.azure(
        tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient,
        clientSecret: FakeProviders.azureSecret)

    /// A rotation of `integration`, asked for now and run round by round until it is `current` (bounded).
    func runUntilCurrent(
        _ engine: RotationEngine, _ api: APIHarness, _ integration: Integration, clock: TestClock
    ) async throws -> RotationRecord {
        _ = try await api.runtime.rotations.request(
            id: integration.id, ownerID: integration.ownerID, actor: .system, now: clock.now)
        // A step may run once its time has passed (SQLite keeps times as floating point: not at the same instant).
        clock.advance(1)
        for _ in 0..<4 {
            try await engine.runOnce()
            let latest = try await api.runtime.rotations.rotations(
                integrationID: integration.id, ownerID: integration.ownerID
            ).first
            if let latest, latest.state == .current { return latest }
        }
        throw TestSetupError("the rotation did not become current")
    }

    func withGrace(_ api: APIHarness, _ integration: Integration, hours: Int) async throws -> Integration {
        try await api.runtime.rotations.setPolicy(
            RotationPolicy(mode: .automatic, everyDays: 1, graceHours: hours), id: integration.id,
            ownerID: integration.ownerID, actor: .system)
    }

    @Test(
        """
        a due rotation read before a move does not start bound to the \
        workspace the integration left; the next round rotates it where it is
        """,
        arguments: TestDatabase.all)
    func moveWhileStarting(kind: TestDatabase) async throws {
        try await withEngine(kind) { api, fakes, clock, engine in
            let owner = try await Fixtures.user(in: api.handle.database)
            let team = try await api.runtime.organizations.create(name: "Team", by: owner, actor: .system)
            let integration = try await create(api, .azure, Self.azure, owner: owner)
            clock.advance(2 * 86400)
            // What a round of `startDue` read just before the move committed.
            let read = try await api.runtime.integrations.get(id: integration.id, ownerID: owner)
            let moved = try await api.runtime.integrations.move(
                id: integration.id, from: owner, to: team.id, actor: .system)
            #expect(try await api.runtime.rotations.start(read, actor: .system, now: clock.now) == nil)
            #expect(try await api.runtime.rotations.rotations(integrationID: integration.id, ownerID: owner).isEmpty)

            let rotation = try await drain(engine, api, moved, clock: clock)
            #expect(rotation.state == .done, "\(rotation.error ?? "")")
            #expect(rotation.ownerID == team.id)
            let now = try await api.runtime.integrations.get(id: integration.id, ownerID: team.id)
            #expect(now.credentialVersion == moved.credentialVersion + 1 && now.status == .connected)
            #expect(fakes.azureSecretKeyIDs.count == 1 && fakes.azureSecretKeyIDs != [FakeProviders.azureSecretKeyID])
        }
    }

    @Test(
        """
        an integration deleted while the provider makes its new credential: \
        the rotation deletes what it made, and nothing is left for the operator
        """,
        arguments: TestDatabase.all)
    func deleteWhileCreating(kind: TestDatabase) async throws {
        try await withEngine(kind) { api, fakes, clock, engine in
            let owner = try await Fixtures.user(in: api.handle.database)
            let integration = try await create(api, .azure, Self.azure, owner: owner)
            _ = try await api.runtime.rotations.request(
                id: integration.id, ownerID: owner, actor: .system, now: clock.now)
            clock.advance(1)
            fakes.whileAddingAzurePassword {
                try? await api.runtime.integrations.delete(id: integration.id, ownerID: owner, actor: .system)
            }
            try await engine.runOnce()
            fakes.whileAddingAzurePassword(nil)
            await #expect(throws: KeyhavenError.notFound) {
                _ = try await api.runtime.integrations.get(id: integration.id, ownerID: owner)
            }
            #expect(fakes.azureSecretKeyIDs == [FakeProviders.azureSecretKeyID], "the secret made for it is deleted")
            #expect(try await api.runtime.rotations.unretired().isEmpty)
        }
    }

    @Test(
        """
        an integration deleted during a rotation: every provider credential \
        the rotation made or was to delete is listed for the operator
        """,
        arguments: TestDatabase.all)
    func deleteDuringRotation(kind: TestDatabase) async throws {
        try await withEngine(kind) { api, fakes, clock, engine in
            let owner = try await Fixtures.user(in: api.handle.database)
            // Made, sealed, not current yet.
            let stored = try await create(api, .azure, Self.azure, owner: owner)
            let record = try await api.runtime.rotations.request(
                id: stored.id, ownerID: owner, actor: .system, now: clock.now)
            let made = try await Rotators.rotator(for: .azure)!.create(
                using: Self.azure, tag: record.id.lowercasedText, in: api.runtime.verifier.context
            ).get()
            _ = try await api.runtime.rotations.storeNew(
                made.credentials, keyID: made.keyID, for: record, now: clock.now)
            try await api.runtime.integrations.delete(id: stored.id, ownerID: owner, actor: .system)
            var listed = try await api.runtime.rotations.unretired()
            #expect(listed.map(\.keyID) == [made.keyID] && listed.first?.integrationName == stored.name)

            // Current, the old secret waiting for the grace period to end.
            let current = try await withGrace(api, try await create(api, .azure, Self.azure, owner: owner), hours: 1)
            let rotation = try await runUntilCurrent(engine, api, current, clock: clock)
            try await api.runtime.integrations.delete(id: current.id, ownerID: owner, actor: .system)
            listed = try await api.runtime.rotations.unretired()
            #expect(
                Set(listed.compactMap(\.keyID)) == [
                    made.keyID, FakeProviders.azureSecretKeyID, try #require(rotation.newKeyID),
                ])
            let audit = try await api.handle.database.withConnection { sql in
                try await sql.raw("SELECT * FROM audit_events").all().map { try SQLAuditLog.eventText($0) }.joined(
                    separator: "\n")
            }
            #expect(audit.contains("unretired_provider_keys") && audit.contains(made.keyID))
            for secret in [made.credentials, Self.azure].flatMap(\.secretValues) {
                #expect(!listed.map(\.reason).joined().contains(secret) && !audit.contains(secret))
            }
        }
    }

    @Test(
        """
        credentials replaced during the grace period: the rotation retires the \
        credential it made with the old one, and keeps the one the user went back to
        """,
        arguments: TestDatabase.all)
    func replaceDuringGrace(kind: TestDatabase) async throws {
        try await withEngine(kind) { api, fakes, clock, engine in
            let owner = try await Fixtures.user(in: api.handle.database)
            let integration = try await withGrace(
                api, try await create(api, .azure, Self.azure, owner: owner), hours: 1)
            let context = api.runtime.verifier.context
            // The user makes a secret of their own and puts it in while the old one is still in its grace period.
            _ = try await runUntilCurrent(engine, api, integration, clock: clock)
            let own = try await Rotators.rotator(for: .azure)!.create(using: Self.azure, in: context).get()
            _ = try await api.runtime.integrations.update(
                id: integration.id, ownerID: owner, changes: IntegrationChanges(credentials: own.credentials),
                actor: .system)
            clock.advance(3601)
            var finished = try await drain(engine, api, integration, clock: clock)
            #expect(finished.state == .done, "\(finished.error ?? "")")
            #expect(fakes.azureSecretKeyIDs == [own.keyID], "the old secret and the one the rotation made are deleted")

            // Again, and this time the user goes back to the credential the rotation replaced.
            let second = try await runUntilCurrent(engine, api, integration, clock: clock)
            _ = try await api.runtime.integrations.update(
                id: integration.id, ownerID: owner, changes: IntegrationChanges(credentials: own.credentials),
                actor: .system)
            clock.advance(3601)
            finished = try await drain(engine, api, integration, clock: clock)
            #expect(finished.id == second.id && finished.state == .done, "\(finished.error ?? "")")
            #expect(fakes.azureSecretKeyIDs == [own.keyID], "the credential in use stays; the rotation's is deleted")
        }
    }

    @Test(
        """
        a replaced credential the provider refuses to delete shows \
        on the integration's page and in the API until it is deleted
        """,
        arguments: TestDatabase.all)
    func retireFailureShows(kind: TestDatabase) async throws {
        try await withEngine(kind) { api, fakes, clock, engine in
            let user = try await api.user()
            let integration = try await create(api, .azure, Self.azure, owner: user.id)
            let path = "/api/integrations/\(integration.id.lowercasedText)"
            #expect(try await api.request(.get, path, auth: user.session).json["retire_error"] is NSNull)
            fakes.refuseAzureRemovals(true)
            _ = try await api.runtime.rotations.request(
                id: integration.id, ownerID: user.id, actor: .system, now: clock.now)
            clock.advance(1)
            try await engine.runOnce()
            let rotation = try await api.runtime.rotations.rotations(integrationID: integration.id, ownerID: user.id)
                .first
            #expect(rotation?.state == .current && rotation?.attempts == 1, "\(String(describing: rotation))")
            let shown = try await api.request(.get, path, auth: user.session)
            let problem = try #require(shown.json["retire_error"] as? String)
            #expect(problem.contains("Insufficient privileges"), "\(problem)")
            #expect(shown.json["credential_version"] as? Int == 2, "the new credential is current meanwhile")
            let page = try await api.request(.get, "/integrations/\(integration.id.lowercasedText)", auth: user.session)
            #expect(page.text.contains("id=\"retire-error\"") && page.text.contains("Insufficient privileges"))
            try api.checkContract()

            fakes.refuseAzureRemovals(false)
            clock.advance(3601)
            let finished = try await drain(engine, api, integration, clock: clock)
            #expect(finished.state == .done)
            #expect(try await api.request(.get, path, auth: user.session).json["retire_error"] is NSNull)
            let after = try await api.request(
                .get, "/integrations/\(integration.id.lowercasedText)", auth: user.session)
            #expect(!after.text.contains("retire-error"))
            #expect(fakes.azureSecretKeyIDs.count == 1 && fakes.azureSecretKeyIDs != [FakeProviders.azureSecretKeyID])
        }
    }
}
