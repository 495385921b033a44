import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenStorage
import Logging
import SQLKit
import Synchronization

/// Rows the storage tests need before secrets can be stored: a user and an integration owned by them.
public enum Fixtures {
    /// Inserts a user and returns their id.
    public static func user(in database: Database, email: String? = nil) async throws -> UUID {
        let id = UUID()
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO users (id, email, created_at)
                VALUES (\(bind: id), \(bind: email ?? "user-\(id)@example.test"), \(bind: Date()))
                """
            ).run()
        }
        return id
    }

    /// Inserts an integration for `ownerID` and returns where its secrets go.
    public static func integration(in database: Database, ownerID: UUID, name: String? = nil) async throws
        -> SecretOwner
    {
        let id = UUID()
        let now = Date()
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO integrations (id, owner_id, name, type, status, enabled, config, created_at, updated_at)
                VALUES (\(bind: id), \(bind: ownerID), \(bind: name ?? "integration \(id)"), 'openai', 'verifying',
                \(bind: true), '{}', \(bind: now), \(bind: now))
                """
            ).run()
        }
        return SecretOwner(integrationID: id, ownerID: ownerID)
    }

    /// A keyring source holding one random key, as if from `KEYHAVEN_MASTER_KEY`; its id is `id` if that is a valid
    /// key id, else a fresh one.
    public static func environmentKeyring(id: String = "primary") -> KeyringSource {
        KeyringSource(environmentKey: (try? MasterKey.generate(id: id)) ?? MasterKey.generate())
    }

    /// The base64 of 32 random bytes, as `KEYHAVEN_MASTER_KEY` holds it.
    public static func masterKeyText() -> String {
        Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }

    /// The password test users share (long and uncommon enough for the policy).
    public static let password = "correct horse battery staple 42"

    /// A canary credential: a unique string that must never be found outside its ciphertext.
    public static func canary(_ label: String = "canary") -> String {
        "sk-\(label)-" + UUID().uuidString.replacingOccurrences(of: "-", with: "")
    }
}

/// A log handler that keeps every line in memory, so tests can search what was logged.
public final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])

    public init() {}

    /// A logger whose lines (message and metadata) are kept here.
    public func logger(label: String = "test", level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: label) { label in CapturingHandler(label: label, capture: self) }
        logger.logLevel = level
        return logger
    }

    /// Every line logged so far.
    public var all: [String] { lines.withLock { $0 } }

    fileprivate func append(_ line: String) { lines.withLock { $0.append(line) } }

    private struct CapturingHandler: LogHandler {
        let label: String
        let capture: LogCapture
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            capture.append("\(event.level) \(label): \(event.message) \(merged)")
        }
    }
}

/// A one-way flag a test task raises for another to see.
public final class ManagedSignal: Sendable {
    private let value = Mutex(false)

    public init() {}

    /// Whether ``fire()`` was called.
    public var fired: Bool { value.withLock { $0 } }

    /// Raises the flag.
    public func fire() { value.withLock { $0 = true } }
}
