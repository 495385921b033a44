import Foundation

/// Where a secret version lives: the integration it belongs to and that integration's owner.
///
/// Every `SecretStore` call names both, so a caller can never reach another owner's secret by id alone.
public struct SecretOwner: Sendable, Hashable {
    /// The integration the secret belongs to.
    public var integrationID: UUID
    /// The user who owns that integration.
    public var ownerID: UUID

    /// Creates an owner reference.
    public init(integrationID: UUID, ownerID: UUID) {
        self.integrationID = integrationID
        self.ownerID = ownerID
    }
}

/// What is known about a stored secret version without decrypting it.
public struct SecretVersionInfo: Sendable, Hashable {
    /// The row id of this version (part of the encryption binding).
    public var id: UUID
    /// The version number, counting from 1 within the integration.
    public var version: Int
    /// When the version was stored.
    public var createdAt: Date

    /// Creates version metadata.
    public init(id: UUID, version: Int, createdAt: Date) {
        self.id = id
        self.version = version
        self.createdAt = createdAt
    }
}

/// Envelope-encrypted storage of credential versions (SPEC §4).
///
/// Each `put` stores a new version sealed under a fresh data key; nothing is ever overwritten in place.
public protocol SecretStore: Sendable {
    /// Encrypts `plaintext` and stores it as the integration's next version.
    ///
    /// - Throws: `KeyhavenError.notFound` if the integration does not exist for that owner,
    ///   `KeyhavenError.unavailable` if the database or the active master key cannot be reached.
    @discardableResult
    func put(_ plaintext: SecretBytes, for owner: SecretOwner) async throws -> SecretVersionInfo

    /// Decrypts the latest version, or the given one.
    ///
    /// - Throws: `KeyhavenError.notFound` if there is no such version for that owner,
    ///   `KeyhavenError.decryptionFailed` if the stored bytes do not open (tampered, moved, or wrong key).
    func get(_ owner: SecretOwner, version: Int?) async throws -> (SecretBytes, SecretVersionInfo)

    /// Lists the stored versions, newest first, without decrypting them.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func versions(of owner: SecretOwner) async throws -> [SecretVersionInfo]

    /// Destroys every version of the integration's secret; returns how many were removed.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    @discardableResult
    func destroyAll(_ owner: SecretOwner) async throws -> Int
}
