import AsyncHTTPClient
import Foundation
import KeyhavenCore
import KeyhavenTestSupport
import Testing

@testable import KeyhavenProviders

/// The provider side of automatic rotation, against fakes that keep keys for real and check every signature and
/// token they issued.
@Suite("Credential rotation at the providers", .serialized)
struct RotationTests {
    func withContext(_ body: (FakeProviders, ProviderClient) async throws -> Void) async throws {
        try await withFakeProviders { fakes, _, context in try await body(fakes, context) }
    }

    func verifies(_ type: IntegrationType, _ credentials: Credentials, _ context: ProviderClient) async
        -> VerificationOutcome
    {
        await Verifiers.verify(type, credentials: credentials, config: [:], in: context).outcome
    }

    /// Create with the old credential; check the new one; retire the old one with the new one.
    func rotate(
        _ type: IntegrationType, from old: Credentials, in context: ProviderClient
    ) async throws -> (created: CreatedCredential, oldKeyID: String) {
        let rotator = try #require(Rotators.rotator(for: type))
        let oldKeyID = try await rotator.keyID(of: old, in: context).get()
        let created = try await rotator.create(using: old, in: context).get()
        #expect(created.keyID != oldKeyID)
        #expect(await verifies(type, created.credentials, context) == .connected, "the new credential works")
        #expect(await verifies(type, old, context) == .connected, "the old one still works during the grace period")
        try await rotator.deactivate(oldKeyID, using: created.credentials, in: context).get()
        try await rotator.delete(oldKeyID, using: created.credentials, in: context).get()
        #expect(await verifies(type, old, context) == .invalidCredentials, "the old credential no longer works")
        #expect(await verifies(type, created.credentials, context) == .connected)
        #expect(
            !"\(created.credentials)".contains(created.credentials.secretValues.first ?? "?"),
            "the new secret prints redacted")
        return (created, oldKeyID)
    }

    @Test("AWS: a second key for the key's own IAM user, the old one set Inactive, then deleted")
    func aws() async throws {
        try await withContext { fakes, context in
            let old = Credentials.aws(
                accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret, sessionToken: nil)
            let rotator = try #require(Rotators.rotator(for: .aws))
            let created = try await rotator.create(using: old, in: context).get()
            #expect(fakes.awsKeys().map(\.active) == [true, true])
            try await rotator.deactivate(FakeProviders.awsAccessKeyID, using: created.credentials, in: context).get()
            #expect(
                fakes.awsKeys().map(\.active) == [false, true], "deactivated first, kept for the second grace period")
            #expect(await verifies(.aws, old, context) == .invalidCredentials)
            try await rotator.delete(FakeProviders.awsAccessKeyID, using: created.credentials, in: context).get()
            #expect(fakes.awsKeys().map(\.id) == [created.keyID], "exactly one key left: the new one")
            // And the new key can rotate itself in turn.
            let (again, _) = try await rotate(.aws, from: created.credentials, in: context)
            #expect(fakes.awsKeys().map(\.id) == [again.keyID])
        }
    }

    @Test("AWS: a user that already holds two keys is told so and nothing changes")
    func awsLimit() async throws {
        try await withContext { fakes, context in
            let old = Credentials.aws(
                accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret, sessionToken: nil)
            let rotator = try #require(Rotators.rotator(for: .aws))
            _ = try await rotator.create(using: old, in: context).get()
            let before = fakes.awsKeys().map(\.id)
            guard case .failure(let failure) = await rotator.create(using: old, in: context) else {
                Issue.record("a third key was created")
                return
            }
            #expect(failure.message.contains("already has two access keys"))
            #expect(fakes.awsKeys().map(\.id) == before)
            let temporary = Credentials.aws(
                accessKeyID: "ASIAQWERTYUIOPASDFGH", secretAccessKey: FakeProviders.awsSecret,
                sessionToken: "FQoGZXIvYXdzEXAMPLE")
            guard case .failure(let refused) = await rotator.create(using: temporary, in: context) else {
                Issue.record("temporary credentials were rotated")
                return
            }
            #expect(refused.message.contains("Temporary"))
        }
    }

    @Test("Google Cloud: a new key for the same service account; the old key deleted with a token from the new one")
    func google() async throws {
        try await withContext { fakes, context in
            let old = Credentials.googleServiceAccount(fakes.googleAccount)
            let (created, oldKeyID) = try await rotate(.googleCloud, from: old, in: context)
            #expect(oldKeyID == "fake-key-1")
            #expect(fakes.googleKeyIDs == [created.keyID])
        }
    }

    @Test("Azure: a new application password from Graph; the old one found by its hint and removed")
    func azure() async throws {
        try await withContext { fakes, context in
            let old = Credentials.azure(
                tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient,
                clientSecret: FakeProviders.azureSecret)
            let (created, oldKeyID) = try await rotate(.azure, from: old, in: context)
            #expect(oldKeyID == FakeProviders.azureSecretKeyID)
            #expect(fakes.azureSecretKeyIDs == [created.keyID])
        }
    }

    @Test("a refused credential gets a failure without any echo of the secret, and nothing is created")
    func refused() async throws {
        try await withContext { fakes, context in
            let wrongSecret = "wrong~azure~secret~value~0000"
            let azure = Credentials.azure(
                tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient, clientSecret: wrongSecret)
            guard case .failure(let failure) = await Rotators.rotator(for: .azure)!.create(using: azure, in: context)
            else {
                Issue.record("created with a wrong secret")
                return
            }
            #expect(failure.outcome == .invalidCredentials)
            #expect(!failure.message.contains("azure~secret"), "\(failure.message)")
            #expect(fakes.azureSecretKeyIDs == [FakeProviders.azureSecretKeyID])
            let aws = Credentials.aws(
                accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: String(repeating: "Z", count: 40),
                sessionToken: nil)
            guard case .failure(let awsFailure) = await Rotators.rotator(for: .aws)!.create(using: aws, in: context)
            else {
                Issue.record("created with a wrong secret")
                return
            }
            #expect(awsFailure.outcome == .invalidCredentials)
            #expect(fakes.awsKeys().count == 1)
            #expect(
                Rotators.rotator(for: .openai) == nil && Rotators.rotator(for: .anthropic) == nil
                    && Rotators.rotator(for: .gemini) == nil)
        }
    }
}
