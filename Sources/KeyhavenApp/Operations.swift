import Foundation
import KeyhavenCore
import KeyhavenStorage
import Logging

/// The operator's commands (SPEC §10) as library calls; the CLI only parses, calls these, and prints.
public enum KeyhavenOperations {
    /// Opens the database, runs `body`, and closes it again whatever happens.
    static func withDatabase<T: Sendable>(
        _ configuration: KeyhavenConfiguration, logger: Logger, migrate: Bool = true,
        _ body: (Database) async throws -> T
    ) async throws -> T {
        let database = try await Database.open(configuration.database, logger: logger)
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

    /// Rotates to a new master key, or finishes an interrupted rotation.
    ///
    /// - Throws: `KeyhavenError` if a key is missing or wrong, or the database cannot be reached.
    public static func rotate(
        _ configuration: KeyhavenConfiguration, logger: Logger, batchSize: Int, pause: Duration,
        progress: @escaping @Sendable (RotationProgress) -> Void
    ) async throws -> RotationResult {
        try await withDatabase(configuration, logger: logger) { database in
            try await KeyManagement(database: database, source: configuration.keyring, logger: logger)
                .rotate(batchSize: batchSize, pause: pause, progress: progress)
        }
    }

    /// Removes a master key that nothing references any more.
    ///
    /// - Throws: `KeyhavenError.keyring` if the key is active or still wraps secrets.
    public static func retire(id: String, _ configuration: KeyhavenConfiguration, logger: Logger) async throws {
        try await withDatabase(configuration, logger: logger) { database in
            try await KeyManagement(database: database, source: configuration.keyring, logger: logger).retire(id: id)
        }
    }
}
