import Foundation
import KeyhavenCore
import KeyhavenDatabase
import KeyhavenGateway
import KeyhavenStorage
import KeyhavenWeb
import Logging

/// The operator's commands (SPEC §10) as library calls; the CLI only parses, calls these, and prints.
public enum KeyhavenOperations {
    /// Opens the database, runs `body`, and closes it again whatever happens.
    static func withDatabase<T: Sendable>(
        _ configuration: KeyhavenConfiguration, logger: Logger, migrate: Bool = true,
        _ body: (Database) async throws -> T
    ) async throws -> T {
        let database = try await configuration.openDatabase(logger: logger)
        do {
            if migrate { try await Migrator(database: database).migrate() }
            let result = try await body(database)
            await database.shutdown()
            return result
        } catch {
            await database.shutdown()
            throw error
        }
    }

    /// Applies pending migrations; returns their names.
    ///
    /// - Throws: `KeyhavenError` if the database cannot be reached or is newer than this build.
    public static func migrate(_ configuration: KeyhavenConfiguration, logger: Logger) async throws -> [String] {
        try await withDatabase(configuration, logger: logger, migrate: false) { database in
            try await Migrator(database: database).migrate()
        }
    }

    /// Every master key the database or the keyring knows.
    ///
    /// - Throws: `KeyhavenError` if the database or the keyring cannot be read.
    public static func keyStatus(_ configuration: KeyhavenConfiguration, logger: Logger) async throws
        -> [MasterKeyStatus]
    {
        try await withDatabase(configuration, logger: logger) { database in
            try await KeyManagement(database: database, source: configuration.keyring, logger: logger).status()
        }
    }

    /// Opens the whole runtime (database, keyring, audit keys), runs `body`, and closes it again whatever happens.
    static func withRuntime<T: Sendable>(
        _ configuration: KeyhavenConfiguration, logger: Logger, allowKeyringCreation: Bool = false,
        _ body: (KeyhavenRuntime) async throws -> T
    ) async throws -> T {
        let runtime = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: allowKeyringCreation, logger: logger)
        do {
            let result = try await body(runtime)
            await runtime.shutdown()
            return result
        } catch {
            await runtime.shutdown()
            throw error
        }
    }

    /// Replaces the model price table with `data`, checked first (nothing changes if it is refused); returns how
    /// many models of the gateway's providers it prices and its SHA-256. Running servers load it within 30 s.
    ///
    /// - Throws: `KeyhavenError.badRequest` naming what is wrong with the table; `KeyhavenError` if the database
    ///   cannot be opened.
    public static func importPrices(_ data: Data, _ configuration: KeyhavenConfiguration, logger: Logger) async throws
        -> (models: Int, sha256: String)
    {
        let table: PriceTable
        do {
            table = try PriceTable(json: data)
        } catch let invalid as PriceTable.Invalid {
            throw KeyhavenError.badRequest(invalid.description)
        }
        return try await withRuntime(configuration, logger: logger) { runtime in
            (table.count, try await runtime.priceStore.importTable(data, models: table.count, actor: .operator))
        }
    }

    /// The provider credentials Keyhaven could not retire itself, for the operator to delete at the provider.
    ///
    /// - Throws: `KeyhavenError` if the database cannot be reached.
    public static func unretiredKeys(_ configuration: KeyhavenConfiguration, logger: Logger) async throws
        -> [UnretiredKey]
    {
        try await withRuntime(configuration, logger: logger) { runtime in try await runtime.rotations.unretired() }
    }

    /// Rotates to a new master key, or finishes an interrupted rotation. Data keys that do not open are left as
    /// they are and listed in the result's `failed`.
    ///
    /// - Throws: `KeyhavenError` if a key is missing or wrong, or the database cannot be reached.
    public static func rotate(
        _ configuration: KeyhavenConfiguration, logger: Logger, batchSize: Int, pause: Duration,
        progress: @escaping @Sendable (RotationProgress) -> Void
    ) async throws -> RotationResult {
        try await withRuntime(configuration, logger: logger) { runtime in
            let result = try await KeyManagement(
                database: runtime.database, source: configuration.keyring, logger: logger
            )
            .rotate(batchSize: batchSize, pause: pause, progress: progress)
            try await runtime.audit.append(
                AuditEntry(
                    actor: .operator, action: .keyRotate, outcome: result.failed.isEmpty ? .success : .failure,
                    detail: [
                        "active_kek_id": .string(result.activeKeyID), "rewrapped": .number(Double(result.rewrapped)),
                        "resumed": .bool(result.resumed), "failed": .number(Double(result.failed.count)),
                    ]))
            return result
        }
    }

    /// Removes a master key that nothing references any more.
    ///
    /// - Throws: `KeyhavenError.keyring` if the key is active or still wraps secrets.
    public static func retire(id: String, _ configuration: KeyhavenConfiguration, logger: Logger) async throws {
        try await withRuntime(configuration, logger: logger) { runtime in
            try await KeyManagement(database: runtime.database, source: configuration.keyring, logger: logger).retire(
                id: id)
            try await runtime.audit.append(
                AuditEntry(actor: .operator, action: .keyRetire, detail: ["kek_id": .string(id)]))
        }
    }
}

extension KeyhavenOperations {
    /// Creates a user with a password, as the operator. On a fresh database this also creates the keyring, as the
    /// first `serve` would.
    ///
    /// - Throws: `KeyhavenError.validationFailed` for a bad email or password, `.conflict` if the email is taken.
    public static func createUser(
        email: String, password: String, _ configuration: KeyhavenConfiguration, logger: Logger
    ) async throws -> User {
        try await withRuntime(configuration, logger: logger, allowKeyringCreation: true) { runtime in
            try await runtime.accounts.createUser(email: email, password: password, actor: .operator)
        }
    }

    /// Creates a service token, scoped to one workspace if `workspace` is given; returns its record and the token,
    /// shown once.
    ///
    /// - Throws: `KeyhavenError.badRequest` if the workspace is neither an organization nor an enabled user;
    ///   `KeyhavenError` if the database cannot be reached.
    public static func createServiceToken(
        name: String, scopes: Set<TokenScope>, workspace: UUID? = nil, _ configuration: KeyhavenConfiguration,
        logger: Logger
    ) async throws -> (token: String, record: APIToken) {
        try await withRuntime(configuration, logger: logger, allowKeyringCreation: true) { runtime in
            if let workspace, try await !exists(workspace, in: runtime) {
                throw KeyhavenError.badRequest("no organization or user has the id \(workspace.lowercasedText)")
            }
            return try await runtime.tokens.create(
                kind: .service, userID: nil, workspaceID: workspace, name: name, scopes: scopes, expiresAt: nil,
                audit: AuditEntry(actor: .operator, action: .tokenCreate, ownerID: workspace))
        }
    }

    private static func exists(_ workspace: UUID, in runtime: KeyhavenRuntime) async throws -> Bool {
        if try await runtime.users.find(id: workspace) != nil { return true }
        do {
            _ = try await runtime.organizations.get(id: workspace)
            return true
        } catch KeyhavenError.notFound {
            return false
        }
    }

    /// Revokes any token by id.
    ///
    /// - Throws: `KeyhavenError.notFound` if there is no such live token.
    public static func revokeToken(id: UUID, _ configuration: KeyhavenConfiguration, logger: Logger) async throws {
        try await withRuntime(configuration, logger: logger) { runtime in
            try await runtime.tokens.revoke(
                id: id, userID: nil, audit: AuditEntry(actor: .operator, action: .tokenRevoke))
        }
    }

    /// Recomputes the audit chain and checks it against its signed checkpoints.
    ///
    /// - Throws: `KeyhavenError` if the database or the keyring cannot be read.
    public static func verifyAudit(_ configuration: KeyhavenConfiguration, logger: Logger) async throws
        -> AuditVerification
    {
        try await withRuntime(configuration, logger: logger) { runtime in try await runtime.audit.verify() }
    }
}
