import Foundation
import KeyhavenApp
import KeyhavenBackup
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenTestSupport
import Logging
import SQLKit
import Testing

/// `keyhaven backup`, `backup verify` and `restore` as an operator runs them: exit codes, one-line reasons, no
/// secret in any output, and a restore killed with SIGKILL.
@Suite("The backup commands")
struct BackupCommandTests {
    let binary: KeyhavenBinary

    init() throws {
        binary = try KeyhavenBinary()
    }

    func lastLine(_ text: String) -> String {
        text.split(separator: "\n").last.map(String.init) ?? ""
    }

    /// An SQLite database at `path` with `count` integrations, each with one secret, inserted in bulk.
    func seed(path: String, masterKey: String, count: Int) async throws {
        let configuration = KeyhavenConfiguration(
            database: .sqlite(path: path),
            keyring: KeyringSource(environmentKey: try MasterKey(id: "primary", base64: masterKey)))
        let runtime = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: true, logger: Logger(label: "test"))
        let kek = try #require(runtime.keyring.keyring.keys.first)
        let user = try await Fixtures.user(in: runtime.database)
        let now = Date()
        for start in stride(from: 0, to: count, by: 500) {
            let size = min(500, count - start)
            var integrations = SQLQueryString(
                """
                INSERT INTO integrations (id, owner_id, name, type, status, \
                enabled, config, current_version, created_at, updated_at) VALUES\u{20}
                """
            )
            var secrets = SQLQueryString(
                """
                INSERT INTO secrets (id, integration_id, owner_id, version, \
                kek_id, wrapped_dek, nonce, ciphertext, created_at) VALUES\u{20}
                """
            )
            for offset in 0..<size {
                let id = UUID()
                let (binding, sealed) = try Envelope.sealNewRow(
                    SecretBytes(utf8: "sk-bulk-\(start + offset)"), integrationID: id, ownerID: user, version: 1,
                    kek: kek)
                let integrationValues: [any Encodable & Sendable] = [
                    id, user, "bulk \(start + offset)", "openai", "connected", true, "{}", 1, now, now,
                ]
                let secretValues: [any Encodable & Sendable] = [
                    binding.secretID, id, user, 1, sealed.kekID, sealed.wrappedDEK, sealed.nonce, sealed.ciphertext,
                    now,
                ]
                integrations.appendInterpolation(unsafeRaw: offset == 0 ? "(" : ", (")
                integrations.appendInterpolation(binds: integrationValues)
                integrations.appendInterpolation(unsafeRaw: ")")
                secrets.appendInterpolation(unsafeRaw: offset == 0 ? "(" : ", (")
                secrets.appendInterpolation(binds: secretValues)
                secrets.appendInterpolation(unsafeRaw: ")")
            }
            let (first, second) = (integrations, secrets)
            try await runtime.database.transaction { sql in
                try await sql.raw(first).run()
                try await sql.raw(second).run()
            }
        }
        try await runtime.audit.append(AuditEntry(actor: .operator, action: .signup))
        await runtime.shutdown()
    }

    func counts(_ path: String) async throws -> [String: Int64] {
        let database = try await Database.open(.sqlite(path: path), logger: Logger(label: "test"))
        try await Migrator(database: database).migrate()
        let counts = try await BackupScenario.counts(database)
        await database.shutdown()
        return counts
    }

    @Test("backup, verify and restore from the command line; damage and misuse fail with one line, no secret shown")
    func commandLine() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let masterKey = Fixtures.masterKeyText()
        let passphrase = "the operator's long passphrase"
        try await seed(path: directory.path + "/source.sqlite", masterKey: masterKey, count: 50)
        let passphraseFile = try makePassphraseFile(in: directory.path, passphrase: passphrase)
        let keyFile = try makeBackupKeyFile(in: directory.path)
        let source = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/source.sqlite", "KEYHAVEN_MASTER_KEY": masterKey,
        ]
        let target = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/target.sqlite", "KEYHAVEN_MASTER_KEY": masterKey,
        ]
        let file = directory.path + "/keyhaven.khbackup"
        var outputs: [String] = []
        let rows = try await counts(directory.path + "/source.sqlite").values.reduce(0, +)

        let backup = try await binary.run(
            ["backup", "--output", file, "--passphrase-file", passphraseFile], environment: source, in: directory.path)
        outputs += [backup.stdout, backup.stderr]
        #expect(backup.status == 0, "\(backup.stderr)")
        #expect(backup.stdout.contains("Backup written to \(file): \(rows) rows"), "\(backup.stdout)")
        #expect(backup.stderr.isEmpty, "no progress unless asked for: \(backup.stderr)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter {
            $0.contains("tmp")
        }
        #expect(leftovers.isEmpty)

        let verify = try await binary.run(
            ["backup", "verify", file, "--passphrase-file", passphraseFile], in: directory.path)
        outputs += [verify.stdout, verify.stderr]
        #expect(verify.status == 0)
        #expect(verify.stdout.hasPrefix("The backup is intact: \(rows) rows"), "\(verify.stdout)")

        let wrong = try await binary.run(["backup", "verify", file, "--key-file", keyFile], in: directory.path)
        outputs += [wrong.stdout, wrong.stderr]
        #expect(
            lastLine(wrong.stderr) == "keyhaven: error: this backup was made with a passphrase: give --passphrase-file")

        // The rest with a key file: scrypt is slow in a debug build.
        let keyed = try await binary.run(
            ["backup", "--output", file, "--key-file", keyFile], environment: source, in: directory.path)
        #expect(keyed.status == 0, "\(keyed.stderr)")
        var damaged = try Data(contentsOf: URL(fileURLWithPath: file))
        damaged[damaged.count - 40] ^= 0x04
        try damaged.write(to: URL(fileURLWithPath: directory.path + "/damaged.khbackup"))
        let refused = try await binary.run(
            ["backup", "verify", directory.path + "/damaged.khbackup", "--key-file", keyFile], in: directory.path)
        outputs += [refused.stdout, refused.stderr]
        #expect(refused.status != 0)
        #expect(
            lastLine(refused.stderr)
                == "keyhaven: error: the backup was tampered with at chunk 0: it does not authenticate")
        #expect(refused.stderr.split(separator: "\n").count == 1)

        let restore = try await binary.run(
            ["restore", "--input", file, "--key-file", keyFile], environment: target, in: directory.path)
        outputs += [restore.stdout, restore.stderr]
        #expect(restore.status == 0, "\(restore.stderr)")
        // The second backup also holds the first one's audit event.
        #expect(restore.stdout.contains("Restored \(rows + 1) rows"), "\(restore.stdout)")
        #expect(restore.stdout.contains("50 secret versions open"))

        let again = try await binary.run(
            ["restore", "--input", file, "--key-file", keyFile], environment: target, in: directory.path)
        outputs += [again.stdout, again.stderr]
        #expect(again.status != 0)
        #expect(lastLine(again.stderr).hasPrefix("keyhaven: error: the target database is not empty"))

        let audit = try await binary.run(["audit", "verify"], environment: target, in: directory.path)
        #expect(audit.status == 0, "\(audit.stderr)")

        let misuse = try await binary.run(
            ["backup", "--output", file, "--passphrase-file", passphraseFile, "--key-file", keyFile],
            environment: source,
            in: directory.path)
        #expect(misuse.status != 0)
        #expect(misuse.stderr.contains("give exactly one of --passphrase-file and --key-file"))

        for text in outputs {
            #expect(!text.contains(passphrase) && !text.contains(masterKey) && !text.contains("sk-bulk-"))
        }
    }

    @Test("a restore killed with SIGKILL midway leaves the target empty, and a second restore then completes")
    func killedRestore() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let masterKey = Fixtures.masterKeyText()
        try await seed(path: directory.path + "/source.sqlite", masterKey: masterKey, count: 6000)
        let keyFile = try makeBackupKeyFile(in: directory.path)
        let source = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/source.sqlite", "KEYHAVEN_MASTER_KEY": masterKey,
        ]
        let target = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/target.sqlite", "KEYHAVEN_MASTER_KEY": masterKey,
        ]
        let file = directory.path + "/keyhaven.khbackup"
        let expected = try await counts(directory.path + "/source.sqlite")
        let backup = try await binary.run(
            ["backup", "--output", file, "--key-file", keyFile], environment: source, in: directory.path)
        #expect(backup.status == 0, "\(backup.stderr)")

        let running = try binary.start(
            ["restore", "--input", file, "--key-file", keyFile, "--progress"], environment: target, in: directory.path)
        // Killed as soon as it reports rows loaded, long before it can commit.
        let loading = await running.waitForStderr(timeout: .seconds(120)) { text in
            text.split(separator: "\n").contains { line in
                line.hasPrefix("restoring: ") && !line.hasPrefix("restoring: 0/")
            }
        }
        running.signal(SIGKILL)
        let status = await running.wait()
        #expect(loading, "\(running.stderr)")
        #expect(running.endedBySignal == true, "status \(status): it finished before the kill")

        let afterKill = try await counts(directory.path + "/target.sqlite")
        var complete = expected
        complete["audit_events"] = expected["audit_events"].map { $0 + 1 }
        #expect(afterKill.values.allSatisfy { $0 == 0 } || afterKill == complete, "half restored: \(afterKill)")

        let second = try await binary.run(
            ["restore", "--input", file, "--key-file", keyFile], environment: target, in: directory.path,
            timeout: .seconds(300))
        #expect(second.status == 0, "\(second.stderr)")
        #expect(try await counts(directory.path + "/target.sqlite") == complete)
    }

    @Test("--help works on the backup commands, and bad scheduled-backup settings stop serve with one line")
    func helpAndSettings() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        for command in [["backup"], ["backup", "verify"], ["restore"]] {
            let result = try await binary.run(command + ["--help"], in: directory.path)
            #expect(result.status == 0, "\(command)")
            #expect(result.stdout.contains("USAGE: keyhaven"), "\(command)")
        }
        #expect(ScheduledBackups.parseInterval("6h") == .seconds(6 * 3600))
        #expect(ScheduledBackups.parseInterval("90") == .seconds(90))
        #expect(ScheduledBackups.parseInterval("2d") == .seconds(2 * 86400))
        for bad in ["", "h", "-1h", "1.5h", "soon", "99999999999d"] {
            #expect(ScheduledBackups.parseInterval(bad) == nil, "\(bad)")
        }
        let environment = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/k.sqlite",
            "KEYHAVEN_MASTER_KEY": Fixtures.masterKeyText(),
            "KEYHAVEN_BACKUP_DIR": directory.path, "KEYHAVEN_BACKUP_INTERVAL": "soon",
            "KEYHAVEN_BACKUP_KEY_FILE": try makeBackupKeyFile(in: directory.path), "KEYHAVEN_PORT": "0",
        ]
        let result = try await binary.run(["serve"], environment: environment, in: directory.path)
        #expect(result.status != 0)
        #expect(lastLine(result.stderr).hasPrefix("keyhaven: error: KEYHAVEN_BACKUP_INTERVAL must be"))
        var open = environment
        open["KEYHAVEN_BACKUP_INTERVAL"] = "6h"
        let keyPath = try #require(open["KEYHAVEN_BACKUP_KEY_FILE"])
        chmod(keyPath, 0o644)
        let readable = try await binary.run(["serve"], environment: open, in: directory.path)
        #expect(readable.status != 0)
        #expect(lastLine(readable.stderr).contains("can be read by other users"), "\(readable.stderr)")
    }
}
