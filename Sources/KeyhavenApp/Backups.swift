import Foundation
import KeyhavenBackup
import KeyhavenCore
import Logging
import Prometheus
import ServiceLifecycle

/// A backup that was written.
public struct BackupResult: Sendable {
    /// The file.
    public var path: String
    /// Its header.
    public var header: BackupHeader
    /// Its size in bytes.
    public var bytes: Int64
}

/// What `backup verify` found.
public struct BackupVerification: Sendable {
    /// The checked header.
    public var header: BackupHeader
}

extension KeyhavenOperations {
    /// Writes an encrypted backup of the whole database to `output` (SPEC §14): a temporary file beside it, synced
    /// and renamed once complete, so a failed run leaves nothing. The backup is audited.
    ///
    /// - Parameters:
    ///   - includeKeyring: put the master keys inside, so the secret alone recovers everything.
    ///   - kdf: the scrypt parameters when `secret` is a passphrase.
    /// - Throws: `BackupError` or `KeyhavenError` with a one-line reason.
    public static func backup(
        _ configuration: KeyhavenConfiguration, logger: Logger, output: String, secret: BackupSecret,
        includeKeyring: Bool, kdf: BackupKDF = .standard, chunkSize: Int = BackupFormat.defaultChunkSize,
        progress: @escaping @Sendable (BackupProgress) -> Void = { _ in }
    ) async throws -> BackupResult {
        try await withRuntime(configuration, logger: logger) { runtime in
            try await takeBackup(
                runtime, output: output, secret: secret, includeKeyring: includeKeyring, kdf: kdf, chunkSize: chunkSize,
                actor: .operator, progress: progress)
        }
    }

    /// Writes a backup from an opened runtime and audits it (the command and the scheduled service both come here).
    static func takeBackup(
        _ runtime: KeyhavenRuntime, output: String, secret: BackupSecret, includeKeyring: Bool, kdf: BackupKDF,
        chunkSize: Int, pageSize: Int = DatabaseBackup.pageSize, actor: AuditActor,
        progress: @escaping @Sendable (BackupProgress) -> Void
    ) async throws -> BackupResult {
        let file = try BackupFileOutput(path: output)
        let name = (output as NSString).lastPathComponent
        do {
            let (header, bytes) = try await DatabaseBackup(database: runtime.database, logger: runtime.logger).write(
                secret: secret, kdf: kdf, keyring: includeKeyring ? runtime.keyring.keyring : nil, chunkSize: chunkSize,
                pageSize: pageSize, progress: progress
            ) { data in try file.write(data) }
            try file.commit()
            try await runtime.audit.append(
                AuditEntry(
                    actor: actor, action: .backupCreate,
                    detail: [
                        "file": .string(name), "bytes": .number(Double(bytes)),
                        "rows": .number(Double(header.totalRows)), "includes_keyring": .bool(includeKeyring),
                    ]))
            return BackupResult(path: output, header: header, bytes: bytes)
        } catch {
            file.abort()
            try? await runtime.audit.append(
                AuditEntry(
                    actor: actor, action: .backupCreate, outcome: .failure,
                    detail: ["file": .string(name), "includes_keyring": .bool(includeKeyring)]))
            throw error
        }
    }

    /// Decrypts and checks every chunk, record and row count of a backup without touching any database.
    ///
    /// - Throws: `BackupError` naming the problem: wrong passphrase, truncated, tampered at chunk N, unknown
    ///   format version.
    public static func verifyBackup(path: String, secret: BackupSecret) throws -> BackupVerification {
        let source = try FileByteSource(path: path)
        defer { source.close() }
        let reader = try BackupReader(source: source, secret: secret)
        try reader.verifyToEnd()
        return BackupVerification(header: reader.header)
    }

    /// Loads a backup into the configured database, which must be empty (SQLite or PostgreSQL, whatever the
    /// backup came from); see ``DatabaseBackup/restore(from:configured:progress:)`` for the checks. The key and
    /// the header are checked before the database is opened.
    ///
    /// - Throws: `BackupError` or `KeyhavenError` with a one-line reason; the database is then left empty.
    public static func restore(
        _ configuration: KeyhavenConfiguration, logger: Logger, input: String, secret: BackupSecret,
        progress: @escaping @Sendable (BackupProgress) -> Void = { _ in }
    ) async throws -> RestoreSummary {
        let source = try FileByteSource(path: input)
        defer { source.close() }
        let reader = try BackupReader(source: source, secret: secret)
        return try await withDatabase(configuration, logger: logger) { database in
            try await DatabaseBackup(database: database, logger: logger).restore(
                from: reader, configured: configuration.keyring, progress: progress)
        }
    }
}

/// The settings of scheduled backups (`KEYHAVEN_BACKUP_*`).
public struct ScheduledBackups: Sendable {
    /// Where the files go (`KEYHAVEN_BACKUP_DIR`).
    public var directory: String
    /// How often (`KEYHAVEN_BACKUP_INTERVAL`, e.g. `6h`).
    public var interval: Duration
    /// How many files to keep (`KEYHAVEN_BACKUP_KEEP`).
    public var keep: Int
    /// The key file (`KEYHAVEN_BACKUP_KEY_FILE`), if a key protects them.
    public var keyFile: String?
    /// The passphrase file (`KEYHAVEN_BACKUP_PASSPHRASE_FILE`), if a passphrase protects them.
    public var passphraseFile: String?
    /// Whether the master keys go inside (`KEYHAVEN_BACKUP_INCLUDE_KEYRING`).
    public var includeKeyring: Bool
    /// The scrypt parameters for a passphrase.
    public var kdf: BackupKDF = .standard

    /// Creates the settings.
    public init(
        directory: String, interval: Duration, keep: Int, keyFile: String? = nil, passphraseFile: String? = nil,
        includeKeyring: Bool = false
    ) {
        self.directory = directory
        self.interval = interval
        self.keep = keep
        self.keyFile = keyFile
        self.passphraseFile = passphraseFile
        self.includeKeyring = includeKeyring
    }

    /// Reads the key or passphrase file (again for every backup, so it can be replaced while the server runs).
    ///
    /// - Throws: `BackupError.badSecret` if it cannot be used.
    public func secret() throws -> BackupSecret {
        if let keyFile { return try BackupSecret.keyFile(keyFile) }
        if let passphraseFile { return try BackupSecret.passphraseFile(passphraseFile) }
        throw BackupError.badSecret("set KEYHAVEN_BACKUP_KEY_FILE or KEYHAVEN_BACKUP_PASSPHRASE_FILE")
    }

    /// Parses an interval: a whole number followed by `s`, `m`, `h` or `d` (`6h`), or seconds alone.
    public static func parseInterval(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        var digits = Substring(trimmed)
        var unit: Int64 = 1
        if let last = trimmed.last, let factor = units[last] {
            unit = factor
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = Int64(digits), value > 0,
            value <= 366 * 86400 / unit
        else { return nil }
        return .seconds(value * unit)
    }

    /// The file name of a backup taken at `date`: `keyhaven-20260101T000000.000Z.khbackup` (sorts by time).
    static func fileName(at date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? calendar.timeZone
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .nanosecond], from: date)
        func pad(_ value: Int?, _ width: Int) -> String {
            let text = String(value ?? 0)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let stamp =
            pad(parts.year, 4) + pad(parts.month, 2) + pad(parts.day, 2) + "T" + pad(parts.hour, 2)
            + pad(parts.minute, 2) + pad(parts.second, 2) + "." + pad((parts.nanosecond ?? 0) / 1_000_000, 3) + "Z"
        return "keyhaven-\(stamp).khbackup"
    }

    static func isBackupName(_ name: String) -> Bool {
        name.hasPrefix("keyhaven-") && name.hasSuffix(".khbackup")
    }
}

/// The time and size of the last good backup, and failures, on `/metrics`.
final class BackupMetrics: Sendable {
    let lastSuccess: Gauge
    let lastSize: Gauge
    let failures: Counter

    init(registry: PrometheusCollectorRegistry) {
        lastSuccess = registry.makeGauge(
            name: "keyhaven_backup_last_success_timestamp_seconds",
            help: "When the last good scheduled backup finished (Unix time).")
        lastSize = registry.makeGauge(
            name: "keyhaven_backup_last_size_bytes", help: "The size of the last good scheduled backup.")
        failures = registry.makeCounter(name: "keyhaven_backup_failures_total", help: "Scheduled backups that failed.")
    }
}

/// Takes scheduled backups while the server runs (SPEC §14). Every instance checks the lease in the database
/// now and then; the one that claims a due backup takes it, so many instances take one backup per interval. Old
/// files beyond `keep` are removed after each good backup.
struct ScheduledBackupService: Service {
    let runtime: KeyhavenRuntime
    let settings: ScheduledBackups
    let metrics: BackupMetrics

    func run() async throws {
        let holder = UUID().lowercasedText
        let schedule = BackupSchedule(database: runtime.database)
        let tick = min(settings.interval, .seconds(60))
        let logger = runtime.logger
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            // What a killed process was writing when it died.
            BackupFileOutput.removeAbandoned(in: settings.directory)
            do {
                if try await schedule.claim(holder: holder, interval: settings.interval) {
                    do {
                        try await cancelWhenGracefulShutdown { try await takeOne() }
                    } catch {
                        metrics.failures.increment()
                        logger.error(
                            "scheduled backup failed",
                            metadata: ["reason": "\(Self.reason(error))"])
                        try? await schedule.retry(holder: holder, at: Date().addingTimeInterval(60))
                    }
                }
            } catch {
                logger.error(
                    "could not check the backup schedule", metadata: ["error": "\(String(describing: type(of: error)))"]
                )
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: tick) }
            if Task.isCancelled { return }
        }
    }

    private func takeOne() async throws {
        let path = settings.directory + "/" + ScheduledBackups.fileName(at: Date())
        let result = try await KeyhavenOperations.takeBackup(
            runtime, output: path, secret: try settings.secret(), includeKeyring: settings.includeKeyring,
            kdf: settings.kdf, chunkSize: BackupFormat.defaultChunkSize, actor: .system, progress: { _ in })
        metrics.lastSuccess.set(Date().timeIntervalSince1970)
        metrics.lastSize.set(Double(result.bytes))
        runtime.logger.notice(
            "scheduled backup written",
            metadata: ["file": "\(path)", "bytes": "\(result.bytes)", "rows": "\(result.header.totalRows)"])
        prune()
    }

    /// Removes the oldest backups beyond `keep`.
    private func prune() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: settings.directory) else { return }
        let backups = names.filter(ScheduledBackups.isBackupName).sorted()
        for name in backups.dropLast(settings.keep) {
            try? FileManager.default.removeItem(atPath: settings.directory + "/" + name)
        }
    }

    /// A failure's reason without anything secret: backup and Keyhaven errors are written to be shown.
    static func reason(_ error: any Error) -> String {
        if let error = error as? BackupError { return error.description }
        if let error = error as? KeyhavenError { return error.message }
        return String(describing: type(of: error))
    }
}
