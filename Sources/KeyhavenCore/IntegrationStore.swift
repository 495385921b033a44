import Foundation

/// What an update changes; nil leaves a field as it is.
public struct IntegrationChanges: Sendable {
    public var name: String?
    public var credentials: Credentials?
    public var config: [String: JSONValue]?
    public var enabled: Bool?
    public var rotation: RotationPolicy?

    /// Creates a set of changes.
    public init(
        name: String? = nil, credentials: Credentials? = nil, config: [String: JSONValue]? = nil, enabled: Bool? = nil
    ) {
        self.name = name
        self.credentials = credentials
        self.config = config
        self.enabled = enabled
    }
}

/// What a use of an integration's credentials (a read, a gateway request) is decided on.
public struct CredentialTarget: Sendable {
    /// The integration, as stored when the use was decided.
    public let integration: Integration
    /// Whether its owner (a user's personal workspace) is disabled.
    public let ownerDisabled: Bool

    /// Creates a target.
    public init(integration: Integration, ownerDisabled: Bool) {
        self.integration = integration
        self.ownerDisabled = ownerDisabled
    }
}

/// A refused use of credentials: what the caller is told, and what the audit event records.
public struct CredentialDenial: Error, Sendable {
    /// The `reason` of the denied event (`outside_workspace`, `integration_disabled`, …).
    public let reason: String
    /// The error the caller gets.
    public let error: KeyhavenError
    /// The workspace the denial is recorded in: the integration's, or, for a caller who may not know it exists,
    /// the caller's own (nil: none).
    public let recordedIn: UUID?

    /// Creates a denial.
    public init(reason: String, error: KeyhavenError, recordedIn: UUID?) {
        self.reason = reason
        self.error = error
        self.recordedIn = recordedIn
    }
}

/// Integrations and their encrypted credentials. Every change is audited in the same transaction.
public protocol IntegrationStore: Sendable {
    /// Creates an integration in status `verifying` with its first credential version, counting `check` (the
    /// provider check it starts) in the same transaction: one commit per create, and a create that fails counts
    /// nothing.
    ///
    /// - Throws: `KeyhavenError.conflict` if the owner already has an integration with this name,
    ///   `KeyhavenError.rateLimited` once `check`'s budget is spent.
    func create(
        ownerID: UUID, name: String, type: IntegrationType, config: [String: JSONValue], credentials: Credentials,
        rotation: RotationPolicy, counting check: RateCount?, actor: AuditActor
    ) async throws -> Integration

    /// The owner's integrations, newest first, after the cursor (the last id of the previous page).
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func list(ownerID: UUID, limit: Int, after cursor: UUID?) async throws -> [Integration]

    /// One of the owner's integrations.
    ///
    /// - Throws: `KeyhavenError.notFound` if it does not exist or belongs to someone else.
    func get(id: UUID, ownerID: UUID) async throws -> Integration

    /// Applies changes: new credentials become a new version and status `verifying`; disabling sets `disabled`.
    ///
    /// - Throws: `KeyhavenError.notFound`, or `KeyhavenError.conflict` if the new name is taken.
    func update(id: UUID, ownerID: UUID, changes: IntegrationChanges, actor: AuditActor) async throws -> Integration

    /// Deletes the integration and destroys every secret version.
    ///
    /// - Throws: `KeyhavenError.notFound` if it does not exist or belongs to someone else.
    func delete(id: UUID, ownerID: UUID, actor: AuditActor) async throws

    /// Decrypts the current credentials for the application backend, if `decide` allows it. The read is audited and
    /// `last_used_at` updated in a committed transaction before anything is returned; if that fails, nothing is
    /// returned. `decide` sees the integration (and whether its owner is disabled) inside that transaction, before
    /// anything is decrypted; a denial it returns is audited as a denied read, with its reason, and thrown as its
    /// error.
    ///
    /// - Throws: `KeyhavenError.notFound` (also audited), `.decryptionFailed` (also recorded as status `error`),
    ///   `.unavailable`, the error of a denial.
    func readCredentials(
        id: UUID, actor: AuditActor, decide: @escaping @Sendable (CredentialTarget) -> CredentialDenial?
    ) async throws -> (Integration, Credentials)

    /// One integration by id, whatever its workspace; the caller decides with ``Policy`` what it may do with it.
    ///
    /// - Throws: `KeyhavenError.notFound`, `.unavailable`.
    func find(id: UUID) async throws -> Integration

    /// An integration and its current credentials for the gateway, which injects them into a provider request and
    /// never returns them: no audit event is written (the request is recorded as usage). `decide` sees the
    /// integration, and whether its owner is disabled, before anything is decrypted.
    ///
    /// - Throws: `KeyhavenError.notFound`, `.decryptionFailed`, `.unavailable`, the error of a denial.
    func gatewayTarget(id: UUID, decide: (CredentialTarget) -> CredentialDenial?) async throws
        -> (Integration, Credentials)

    /// One integration by id, whatever its workspace, with the caller's role in that workspace (nil: none), read
    /// together; the caller decides with ``Policy`` what the role allows.
    ///
    /// - Throws: `KeyhavenError.notFound` if it does not exist.
    func find(id: UUID, for userID: UUID) async throws -> (Integration, WorkspaceRole?)

    /// Moves an integration to another workspace: its current credentials are sealed again under the new owner
    /// binding as a new version, every old version is destroyed, and the move is audited in both workspaces.
    ///
    /// - Throws: `KeyhavenError.notFound`; `.conflict` if the target already has an integration with its name or
    ///   a rotation of it is under way.
    func move(id: UUID, from source: UUID, to target: UUID, actor: AuditActor) async throws -> Integration
}

extension IntegrationStore {
    /// Creates an integration with no rotation policy, counting nothing.
    ///
    /// - Throws: as ``create(ownerID:name:type:config:credentials:rotation:counting:actor:)``.
    public func create(
        ownerID: UUID, name: String, type: IntegrationType, config: [String: JSONValue], credentials: Credentials,
        actor: AuditActor
    ) async throws -> Integration {
        try await create(
            ownerID: ownerID, name: name, type: type, config: config, credentials: credentials, rotation: .off,
            counting: nil, actor: actor)
    }
}
