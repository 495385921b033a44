import Foundation
import KeyhavenApp
import KeyhavenBackup
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenServices
import KeyhavenTestSupport
import KeyhavenWeb
import Logging
import SQLKit

/// One throwaway Keyhaven deployment for a reliability run: a database (an SQLite file, or a fresh database on a
/// PostgreSQL server), a master key, a user with a personal token and a service token, and the `keyhaven` binary
/// that serves it.
struct Deployment: Sendable {
    let binary: KeyhavenBinary
    let directory: TemporaryDirectory
    let database: DatabaseLocation
    /// The master key, or nil when the keys are in ``keyringFile``.
    let masterKey: String?
    /// The PostgreSQL server and the database made on it for this run, to drop at the end.
    private let postgres: (admin: DatabaseLocation, name: String)?
    private(set) var personalToken = ""
    private(set) var serviceToken = ""
    /// The seeded user's login.
    static let email = "reliability@example.test"
    static let password = "a reliability password long enough"
    static let quiet = Logger(label: "reliability", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Makes the database (for PostgreSQL, a new database on the server at `postgresURL`), migrates it and seeds a
    /// user with its tokens.
    /// - Parameter keyringFile: keep the master keys in a keyring file (which `keyhaven keys rotate` can add to)
    ///   instead of `KEYHAVEN_MASTER_KEY`.
    static func make(
        binary: KeyhavenBinary, kind: TestDatabase, postgresURL: String?, keyringFile: Bool = false
    ) async throws -> Deployment {
        let directory = try TemporaryDirectory()
        var postgres: (admin: DatabaseLocation, name: String)?
        let location: DatabaseLocation
        switch kind {
        case .sqlite:
            location = .sqlite(path: directory.path + "/keyhaven.sqlite")
        case .postgres:
            guard let postgresURL, var components = URLComponents(string: postgresURL) else {
                throw TestSetupError("PostgreSQL runs need KEYHAVEN_TEST_POSTGRES_URL")
            }
            let name =
                "kh_reliability_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
            let admin = try DatabaseLocation(url: postgresURL)
            let server = try await Database.open(admin, logger: quiet)
            try await server.withConnection { sql in try await sql.raw("CREATE DATABASE \(ident: name)").run() }
            await server.shutdown()
            components.path = "/" + name
            location = .postgres(url: components.string!)
            postgres = (admin, name)
        }
        var deployment = Deployment(
            binary: binary, directory: directory, database: location,
            masterKey: keyringFile ? nil : Fixtures.masterKeyText(), postgres: postgres)
        try await deployment.seed()
        return deployment
    }

    private init(
        binary: KeyhavenBinary, directory: TemporaryDirectory, database: DatabaseLocation, masterKey: String?,
        postgres: (admin: DatabaseLocation, name: String)?
    ) {
        self.binary = binary
        self.directory = directory
        self.database = database
        self.masterKey = masterKey
        self.postgres = postgres
    }

    var keyringFile: String { directory.path + "/keyring.json" }

    var configuration: KeyhavenConfiguration {
        get throws {
            guard let masterKey else {
                return KeyhavenConfiguration(
                    database: database, keyring: KeyringSource(file: KeyringFile(path: keyringFile)))
            }
            return KeyhavenConfiguration(
                database: database,
                keyring: KeyringSource(environmentKey: try MasterKey(id: "primary", base64: masterKey)))
        }
    }

    /// The environment `keyhaven` runs with: the database URL (with its password) and the master key.
    var environment: [String: String] {
        let url: String
        switch database {
        case .sqlite(let path): url = "sqlite://" + path
        case .postgres(let text): url = text
        }
        return [
            "KEYHAVEN_DATABASE_URL": url,
            masterKey == nil ? "KEYHAVEN_KEYRING_FILE" : "KEYHAVEN_MASTER_KEY": masterKey ?? keyringFile,
            "KEYHAVEN_VERIFICATION_WORKER": "false",
            "KEYHAVEN_CHECK_LIMIT": "100000000", "KEYHAVEN_LOG_LEVEL": "info",
            // A backup every second, so kills land in the middle of some.
            "KEYHAVEN_BACKUP_DIR": backups, "KEYHAVEN_BACKUP_KEY_FILE": backupKeyFile, "KEYHAVEN_BACKUP_INTERVAL": "1s",
            "KEYHAVEN_BACKUP_KEEP": "3",
        ]
    }

    var backups: String { directory.path + "/backups" }
    var backupKeyFile: String { directory.path + "/backup.key" }

    /// The backup files in ``backups``: the finished ones and the temporary ones being (or left) written.
    var backupFiles: (finished: [String], temporary: [String]) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: backups)) ?? []
        return (
            names.filter { $0.hasPrefix("keyhaven-") && $0.hasSuffix(".khbackup") }.sorted(),
            names.filter { $0.hasPrefix(BackupFileOutput.temporaryPrefix) }
        )
    }

    private mutating func seed() async throws {
        try FileManager.default.createDirectory(atPath: backups, withIntermediateDirectories: true)
        guard
            FileManager.default.createFile(
                atPath: backupKeyFile, contents: Data((0..<32).map { _ in UInt8.random(in: 0...255) }),
                attributes: [.posixPermissions: 0o600])
        else { throw TestSetupError("cannot write the backup key file \(backupKeyFile)") }
        let runtime = try await KeyhavenRuntime.open(
            try configuration, allowKeyringCreation: masterKey == nil, logger: Self.quiet)
        do {
            let user = try await runtime.users.create(
                email: Self.email, passwordHash: PasswordHasher.hashBlocking(Self.password), audit: nil)
            personalToken = try await runtime.tokens.create(
                kind: .personal, userID: user.id, workspaceID: nil, name: "workload",
                scopes: [.integrationsRead, .integrationsWrite], expiresAt: nil,
                audit: AuditEntry(actor: .operator, action: .tokenCreate)
            ).token
            serviceToken = try await runtime.tokens.create(
                kind: .service, userID: nil, workspaceID: nil, name: "backend",
                scopes: [.credentialsRead, .gatewayUse],
                expiresAt: nil,
                audit: AuditEntry(actor: .operator, action: .tokenCreate)
            ).token
        } catch {
            await runtime.shutdown()
            throw error
        }
        await runtime.shutdown()
    }

    /// Starts `keyhaven serve` on `port` and waits until it answers.
    func serve(port: Int, extra: [String: String] = [:]) async throws -> KeyhavenBinary.Running {
        let server = try binary.start(
            ["serve", "--port", String(port)], environment: environment.merging(extra) { $1 }, in: directory.path)
        guard await server.waitForStderr(timeout: .seconds(60), { $0.contains("Server started") }) else {
            server.signal(SIGKILL)
            _ = await server.wait(timeout: .seconds(5))
            throw TestSetupError("the server did not start: \(server.stderr.suffix(1500))")
        }
        return server
    }

    /// Checks the stored data with the server stopped, as an operator would after a crash: SQLite's own integrity
    /// check, every integration with the secret version it points at (and none beyond it), `keyhaven audit verify`,
    /// and the number of audited credential reads of each integration. Returns what does not hold.
    func checkAtRest(answeredReads: [UUID: Int], gatewayAnswered: Int = 0) async throws -> [String] {
        var problems: [String] = []
        let store = try await Database.open(database, logger: Self.quiet)
        do {
            if database.sqlitePath != nil {
                let result = try await store.withConnection { sql in
                    try await sql.raw("PRAGMA integrity_check").all().map {
                        try $0.decode(column: "integrity_check", as: String.self)
                    }
                }
                if result != ["ok"] { problems.append("SQLite integrity_check: \(result.prefix(5))") }
            }
            let (withoutSecret, beyondCurrent, audited) = try await store.withConnection { sql in
                let withoutSecret =
                    try await sql.raw(
                        """
                        SELECT CAST(COUNT(*) AS BIGINT) AS n FROM integrations i WHERE NOT EXISTS
                        (SELECT 1 FROM secrets s WHERE s.integration_id = i.id AND s.version = i.current_version)
                        """
                    ).first()?.decode(column: "n", as: Int.self) ?? -1
                let beyondCurrent =
                    try await sql.raw(
                        """
                        SELECT CAST(COUNT(*) AS BIGINT) AS n FROM secrets s
                        JOIN integrations i ON i.id = s.integration_id
                        WHERE s.version > i.latest_version
                        """
                    ).first()?.decode(column: "n", as: Int.self) ?? -1
                var audited: [UUID: Int] = [:]
                for row in try await sql.raw(
                    """
                    SELECT integration_id, CAST(COUNT(*) AS BIGINT) AS n FROM audit_events
                    WHERE action = 'credentials.read' AND outcome = 'success' GROUP BY integration_id
                    """
                ).all() {
                    if let id = try row.decode(column: "integration_id", as: UUID?.self) {
                        audited[id] = try row.decode(column: "n", as: Int.self)
                    }
                }
                return (withoutSecret, beyondCurrent, audited)
            }
            // Usage is queued and written in batches, so a kill may lose the last ones; it must never count more.
            let usage = try await store.withConnection { sql in
                try await sql.raw("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM usage_events WHERE source = 'gateway'")
                    .first()?
                    .decode(column: "n", as: Int.self) ?? -1
            }
            if usage > gatewayAnswered {
                problems.append("\(usage) gateway usage events for \(gatewayAnswered) gateway calls answered")
            }
            if withoutSecret != 0 { problems.append("\(withoutSecret) integrations without their current secret") }
            if beyondCurrent != 0 {
                problems.append("\(beyondCurrent) secrets beyond their integration's latest version")
            }
            let unaudited = answeredReads.filter { audited[$0.key, default: 0] < $0.value }
            if !unaudited.isEmpty {
                problems.append(
                    "\(unaudited.count) integrations have fewer audit events than credential reads answered 200")
            }
        } catch {
            await store.shutdown()
            throw error
        }
        await store.shutdown()
        for name in backupFiles.finished {
            let check = try await binary.run(
                ["backup", "verify", "--key-file", backupKeyFile, backups + "/" + name], environment: [:],
                in: directory.path)
            if check.status != 0 { problems.append("the backup \(name) does not verify: \(check.stderr.suffix(300))") }
        }
        let verify = try await binary.run(["audit", "verify"], environment: environment, in: directory.path)
        if verify.status != 0 {
            problems.append(
                "keyhaven audit verify exited \(verify.status): "
                    + "\(verify.stdout.suffix(400))\(verify.stderr.suffix(400))"
            )
        }
        return problems
    }

    /// Removes the files, and the PostgreSQL database.
    func remove() async {
        directory.remove()
        guard let postgres, let server = try? await Database.open(postgres.admin, logger: Self.quiet) else { return }
        try? await server.withConnection { sql in
            try await sql.raw("DROP DATABASE IF EXISTS \(ident: postgres.name) WITH (FORCE)").run()
        }
        await server.shutdown()
    }
}
