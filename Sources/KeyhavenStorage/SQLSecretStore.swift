import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import Logging
import SQLKit

/// The `SecretStore` on SQLite or PostgreSQL: one row per secret version in `secrets`, envelope-encrypted.
public struct SQLSecretStore: SecretStore {
    let database: Database
    let keyring: LiveKeyring
    let logger: Logger

    /// AES-GCM with random 96-bit nonces stays within its bounds for 2^32 wraps per key; stop well before that.
    static let wrapLimit: Int64 = 1 << 31

    /// Creates a store over `database`, sealing with the active key of `keyring`.
    public init(database: Database, keyring: LiveKeyring, logger: Logger) {
        self.database = database
        self.keyring = keyring
        self.logger = logger
    }

    @discardableResult
    public func put(_ plaintext: SecretBytes, for owner: SecretOwner) async throws -> SecretVersionInfo {
        try await database.transaction { sql in
            try await put(plaintext, for: owner, on: sql)
        }
    }

    /// Stores the next version inside the caller's transaction (so an integration and its first secret can be
    /// written together). The version becomes the current one unless `makeCurrent` is false (a rotation's new
    /// credential, stored before it is verified).
    ///
    /// - Throws: as ``put(_:for:)``.
    @discardableResult
    public func put(
        _ plaintext: SecretBytes, for owner: SecretOwner, makeCurrent: Bool = true, on sql: any SQLDatabase
    ) async throws -> SecretVersionInfo {
        // The integration's row first, then the key's: the lock order of every transaction (integration, keyring,
        // audit chain), so concurrent writers never wait on each other in a cycle. (On the right of SET, columns
        // hold their old values.)
        let now = Date()
        let query: SQLQueryString =
            makeCurrent
            ? """
            UPDATE integrations SET latest_version = latest_version + 1, current_version = latest_version + 1,
            credentials_changed_at = \(bind: now), updated_at = \(bind: now)
            WHERE id = \(bind: owner.integrationID) AND owner_id = \(bind: owner.ownerID)
            RETURNING latest_version
            """
            : """
            UPDATE integrations SET latest_version = latest_version + 1
            WHERE id = \(bind: owner.integrationID) AND owner_id = \(bind: owner.ownerID)
            RETURNING latest_version
            """
        guard let version = try await sql.raw(query).first()?.decode(column: "latest_version", as: Int.self) else {
            throw KeyhavenError.notFound
        }
        // Counting the wrap and reading the active key id is one statement; it also locks the key's row, so a
        // rotation cannot switch keys between this read and the insert below.
        guard let active = try await KeyringRegistry(sql: sql).countWraps(1) else {
            throw KeyhavenError.keyring("no master key is active")
        }
        guard active.total < Self.wrapLimit else {
            logger.critical("the active master key reached its wrap limit; run keyhaven keys rotate")
            throw KeyhavenError.unavailable("The vault needs a master key rotation before it can store secrets.")
        }
        let kek = try await keyring.key(id: active.id, on: sql)
        let (binding, sealed) = try Envelope.sealNewRow(
            plaintext, integrationID: owner.integrationID, ownerID: owner.ownerID, version: version, kek: kek)
        let info = SecretVersionInfo(id: binding.secretID, version: version, createdAt: now)
        try await sql.raw(
            """
            INSERT INTO secrets (id, integration_id, owner_id, version, kek_id, wrapped_dek, nonce, ciphertext,
            created_at)
            VALUES (\(bind: info.id), \(bind: owner.integrationID), \(bind: owner.ownerID), \(bind: version), \
            \(bind: sealed.kekID), \(bind: sealed.wrappedDEK), \(bind: sealed.nonce), \(bind: sealed.ciphertext), \
            \(bind: now))
            """
        ).run()
        return info
    }

    public func get(_ owner: SecretOwner, version: Int? = nil) async throws -> (SecretBytes, SecretVersionInfo) {
        try await database.withConnection { sql in try await get(owner, version: version, on: sql) }
    }

    /// Decrypts the latest version, or the given one, inside the caller's transaction.
    ///
    /// - Throws: as ``get(_:version:)``.
    public func get(_ owner: SecretOwner, version: Int?, on sql: any SQLDatabase) async throws
        -> (SecretBytes, SecretVersionInfo)
    {
        var query = SQLQueryString(
            """
            SELECT id, version, kek_id, wrapped_dek, nonce, ciphertext, created_at FROM secrets
            WHERE integration_id = \(bind: owner.integrationID) AND owner_id = \(bind: owner.ownerID)
            """)
        if let version {
            query.appendInterpolation(unsafeRaw: " AND version = ")
            query.appendInterpolation(bind: version)
        }
        query.appendInterpolation(unsafeRaw: " ORDER BY version DESC LIMIT 1")
        guard let row = try await sql.raw(query).first() else { throw KeyhavenError.notFound }
        return try await open(row, prefix: "", owner: owner, on: sql)
    }

    /// Decrypts the current version of each owner's secret, read in one query (a batch of credential reads).
    /// An integration without a secret is absent from the result; one that does not open maps to its error.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func openCurrent(_ owners: [SecretOwner], on sql: any SQLDatabase) async throws
        -> [UUID: Result<(SecretBytes, SecretVersionInfo), KeyhavenError>]
    {
        guard !owners.isEmpty else { return [:] }
        let byIntegration = Dictionary(owners.map { ($0.integrationID, $0) }) { first, _ in first }
        let rows = try await sql.raw(
            """
            SELECT s.integration_id, s.owner_id, s.id, s.version, s.kek_id, s.wrapped_dek, s.nonce, s.ciphertext,
            s.created_at
            FROM secrets s JOIN integrations i
            ON i.id = s.integration_id AND i.owner_id = s.owner_id AND i.current_version = s.version
            WHERE s.integration_id IN (\(binds: Array(byIntegration.keys)))
            """
        ).all()
        return try await open(
            rows.compactMap { row in
                guard let owner = byIntegration[try row.decode(column: "integration_id", as: UUID.self)],
                    try row.decode(column: "owner_id", as: UUID.self) == owner.ownerID
                else { return nil }
                return (row, owner)
            }, on: sql)
    }

    /// Opens `secrets` rows read by the caller, each of its owner, with the columns' names prefixed by `prefix`;
    /// keyed by integration. A secret that does not open is `.decryptionFailed`.
    func open(_ rows: [(row: any SQLRow, owner: SecretOwner)], prefix: String = "", on sql: any SQLDatabase)
        async throws -> [UUID: Result<(SecretBytes, SecretVersionInfo), KeyhavenError>]
    {
        var opened: [UUID: Result<(SecretBytes, SecretVersionInfo), KeyhavenError>] = [:]
        for (row, owner) in rows {
            do {
                opened[owner.integrationID] = .success(try await open(row, prefix: prefix, owner: owner, on: sql))
            } catch let error as KeyhavenError {
                opened[owner.integrationID] = .failure(error)
            }
        }
        return opened
    }

    /// Opens one `secrets` row of `owner`.
    private func open(_ row: any SQLRow, prefix: String, owner: SecretOwner, on sql: any SQLDatabase) async throws
        -> (SecretBytes, SecretVersionInfo)
    {
        let info = SecretVersionInfo(
            id: try row.decode(column: prefix + "id", as: UUID.self),
            version: try row.decode(column: prefix + "version", as: Int.self),
            createdAt: try row.decode(column: prefix + "created_at", as: Date.self))
        let sealed = SealedSecret(
            kekID: try row.decode(column: prefix + "kek_id", as: String.self),
            wrappedDEK: try row.decode(column: prefix + "wrapped_dek", as: Data.self),
            nonce: try row.decode(column: prefix + "nonce", as: Data.self),
            ciphertext: try row.decode(column: prefix + "ciphertext", as: Data.self))
        let kek = try await keyring.key(id: sealed.kekID, on: sql)
        do {
            return (try Envelope.open(sealed, binding: binding(info, owner), kek: kek), info)
        } catch {
            logger.error(
                "a stored secret failed to decrypt",
                metadata: ["secret_id": "\(info.id)", "integration_id": "\(owner.integrationID)"])
            throw error
        }
    }

    public func versions(of owner: SecretOwner) async throws -> [SecretVersionInfo] {
        try await database.withConnection { sql in
            try await sql.raw(
                """
                SELECT id, version, created_at FROM secrets
                WHERE integration_id = \(bind: owner.integrationID) AND owner_id = \(bind: owner.ownerID)
                ORDER BY version DESC
                """
            ).all().map { row in
                SecretVersionInfo(
                    id: try row.decode(column: "id", as: UUID.self),
                    version: try row.decode(column: "version", as: Int.self),
                    createdAt: try row.decode(column: "created_at", as: Date.self))
            }
        }
    }

    @discardableResult
    public func destroyAll(_ owner: SecretOwner) async throws -> Int {
        let destroyed = try await database.transaction { sql in try await destroyAll(owner, on: sql) }
        await database.eraseDestroyedFromLog()
        return destroyed
    }

    /// Destroys every version inside the caller's transaction.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    @discardableResult
    public func destroyAll(_ owner: SecretOwner, on sql: any SQLDatabase) async throws -> Int {
        try await sql.raw(
            """
            DELETE FROM secrets WHERE integration_id = \(bind: owner.integrationID)
            AND owner_id = \(bind: owner.ownerID)
            RETURNING id
            """
        ).all().count
    }

    private func binding(_ info: SecretVersionInfo, _ owner: SecretOwner) -> SecretBinding {
        SecretBinding(
            secretID: info.id, integrationID: owner.integrationID, ownerID: owner.ownerID, version: info.version)
    }
}
