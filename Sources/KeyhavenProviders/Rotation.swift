import Foundation
import KeyhavenCore

/// A credential a rotation created at the provider.
public struct CreatedCredential: Sendable {
    /// The new credentials, whole (to be sealed before anything else is done with them).
    public var credentials: Credentials
    /// The provider's id for it: the AWS access key id, the Google key id, the Azure password's key id.
    public var keyID: String
}

/// Why a provider's management API did not do what was asked; the message never holds a secret.
public struct RotationFailure: Error, Sendable, Equatable {
    public var outcome: VerificationOutcome
    public var message: String

    public init(outcome: VerificationOutcome, message: String) {
        self.outcome = outcome
        self.message = message
    }

    init(_ refused: ProviderClient.Refused, _ what: String) {
        self.init(outcome: refused.outcome, message: "\(what): \(refused.message ?? refused.outcome.message())")
    }
}

/// Replaces a provider credential with a new one through the provider's own API (SPEC §15): AWS IAM access keys,
/// Google service-account keys, Azure application passwords. The caller stores the new credential, verifies it
/// and makes it current; only then, after the grace periods, does it retire the old one with the new one.
public protocol Rotator: Sendable {
    /// The provider's id of `credentials` (to retire them later).
    func keyID(of credentials: Credentials, in context: ProviderClient) async -> Result<String, RotationFailure>

    /// Creates a new credential with the current one; `tag` names it where the provider keeps a name (Azure).
    func create(using current: Credentials, tag: String, in context: ProviderClient) async -> Result<
        CreatedCredential, RotationFailure
    >

    /// Credentials made at the provider since `since` (or carrying `tag`), other than `keep`: what an interrupted
    /// `create` may have left behind.
    func strays(
        since: Date, tag: String, keep: String, using current: Credentials, in context: ProviderClient
    ) async -> Result<[String], RotationFailure>

    /// Stops the old credential from working without deleting it (AWS: `Inactive`); others have no such state and
    /// do nothing. `current` is the new credential, which does the asking.
    func deactivate(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    >

    /// Deletes the old credential at the provider, asking with `current`.
    func delete(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    >
}

extension Rotator {
    /// Creates a new credential without a tag.
    public func create(using current: Credentials, in context: ProviderClient) async -> Result<
        CreatedCredential, RotationFailure
    > {
        await create(using: current, tag: "", in: context)
    }

    /// Nothing to do where a credential has no inactive state (Google Cloud, Azure).
    public func deactivate(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        .success(())
    }
}

/// A provider's timestamp (ISO 8601, with or without fractional seconds).
func providerDate(_ text: String) -> Date? {
    (try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        ?? (try? Date(text, strategy: .iso8601))
}

/// The rotator of each provider that lets a credential replace itself.
public enum Rotators {
    /// The rotator for `type`'s kind of credentials, or nil where only reminders are possible (API keys).
    public static func rotator(for type: IntegrationType) -> (any Rotator)? {
        switch type.entry?.credential.kind {
        case .awsKeys?: Sanitized(base: AWSRotator())
        case .googleServiceAccount?: Sanitized(base: GoogleCloudRotator())
        case .azureServicePrincipal?: Sanitized(base: AzureRotator())
        case .apiKey?, nil: nil
        }
    }
}

/// Removes any echo of the credentials in use from what a provider said when it refused (Azure, for one, quotes a
/// wrong secret back).
struct Sanitized: Rotator {
    let base: any Rotator

    func keyID(of credentials: Credentials, in context: ProviderClient) async -> Result<String, RotationFailure> {
        clean(await base.keyID(of: credentials, in: context), credentials)
    }

    func create(using current: Credentials, tag: String, in context: ProviderClient) async -> Result<
        CreatedCredential, RotationFailure
    > {
        clean(await base.create(using: current, tag: tag, in: context), current)
    }

    func strays(
        since: Date, tag: String, keep: String, using current: Credentials, in context: ProviderClient
    ) async -> Result<[String], RotationFailure> {
        clean(await base.strays(since: since, tag: tag, keep: keep, using: current, in: context), current)
    }

    func deactivate(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        clean(await base.deactivate(keyID, using: current, in: context), current)
    }

    func delete(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        clean(await base.delete(keyID, using: current, in: context), current)
    }

    private func clean<T>(_ result: Result<T, RotationFailure>, _ credentials: Credentials) -> Result<
        T, RotationFailure
    > {
        result.mapError {
            RotationFailure(
                outcome: $0.outcome, message: Sanitizer.clean($0.message, secrets: credentials.secretValues))
        }
    }
}
