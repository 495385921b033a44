import Foundation

/// What an update changes; nil leaves a field as it is.
public struct IntegrationChanges: Sendable {
    public var name: String?
    public var credentials: Credentials?
    public var config: [String: JSONValue]?
    public var enabled: Bool?
    public var rotation: RotationPolicy?

    /// Creates a set of changes.
    public init(name: String? = nil, credentials: Credentials? = nil, config: [String: JSONValue]? = nil, enabled: Bool? = nil) {
        self.name = name
        self.credentials = credentials
        self.config = config
        self.enabled = enabled
    }
}

/// Integrations and their encrypted credentials. Every change is audited in the same transaction.
public protocol IntegrationStore: Sendable {
    /// Creates an integration in status `verifying` with its first credential version.
    ///
    /// - Throws: `KeyhavenError.conflict` if the owner already has an integration with this name.
    func create(
        ownerID: UUID, name: String, type: IntegrationType, config: [String: JSONValue], credentials: Credentials,
        rotation: RotationPolicy, actor: AuditActor
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

    /// Decrypts the current credentials for the application backend. The read is audited and `last_used_at`
    /// updated in a committed transaction before anything is returned; if that fails, nothing is returned. A
    /// service token scoped to a workspace (`scope`) reads only that workspace's integrations.
    ///
    /// - Throws: `KeyhavenError.notFound` (also outside the scope), `.integrationDisabled` (a disabled
    ///   integration), `.forbidden` (a disabled owner), `.decryptionFailed` (also recorded as status `error`),
    ///   `.unavailable`; refusals are audited as denied reads.
    func readCredentials(id: UUID, scope: UUID?, actor: AuditActor) async throws -> (Integration, Credentials)

    /// One integration by id, whatever its workspace; the caller decides with ``Policy`` what it may do with it.
    ///
    /// - Throws: `KeyhavenError.notFound`, `.unavailable`.
    func find(id: UUID) async throws -> Integration

    /// An integration and its current credentials for the gateway, which injects them into a provider request and
    /// never returns them: no audit event is written (the request is recorded as usage). `check` sees the
    /// integration, and whether its owner is disabled, before anything is decrypted.
    ///
    /// - Throws: `KeyhavenError.notFound`, `.decryptionFailed`, `.unavailable`, what `check` throws.
    func gatewayTarget(id: UUID, check: (Integration, _ ownerDisabled: Bool) throws -> Void) async throws
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
    /// Creates an integration with no rotation policy.
    ///
    /// - Throws: as ``create(ownerID:name:type:config:credentials:rotation:actor:)``.
    public func create(
        ownerID: UUID, name: String, type: IntegrationType, config: [String: JSONValue], credentials: Credentials,
        actor: AuditActor
    ) async throws -> Integration {
        try await create(
            ownerID: ownerID, name: name, type: type, config: config, credentials: credentials, rotation: .off, actor: actor)
    }
}
