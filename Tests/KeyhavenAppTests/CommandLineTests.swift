import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// What an operator sees from the `keyhaven` executable: exit codes, one-line failures, signals, and a rotation
/// killed with SIGKILL.
@Suite("The keyhaven command")
struct CommandLineTests {
    let binary: KeyhavenBinary

    init() throws {
        binary = try KeyhavenBinary()
    }

    /// A database file with `count` secrets, written through the library as a server would.
    func seed(
        _ directory: TemporaryDirectory, keyring: KeyringSource, count: Int
    ) async throws -> [SecretOwner] {
        let configuration = KeyhavenConfiguration(
            database: .sqlite(path: directory.path + "/keyhaven.sqlite"), keyring: keyring)
        let runtime = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: true, logger: Logger(label: "test"))
        var owners: [SecretOwner] = []
        for _ in 0..<4 {
            owners.append(
                try await Fixtures.integration(
                    in: runtime.database, ownerID: try await Fixtures.user(in: runtime.database)))
        }
        let perOwner = count / owners.count
        try await withThrowingTaskGroup(of: Void.self) { group in
            for owner in owners {
                group.addTask {
                    for index in 0..<perOwner {
                        try await runtime.secrets.put(
                            SecretBytes(utf8: "sk-\(owner.integrationID)-\(index + 1)"), for: owner)
                    }
                }
            }
            try await group.waitForAll()
        }
        await runtime.shutdown()
        return owners
    }

    func lastLine(_ text: String) -> String {
        text.split(separator: "\n").last.map(String.init) ?? ""
    }

    @Test("keys rotate over a damaged data key re-wraps the rest, names the secret, and exits non-zero")
    func rotateReportsDamagedRow() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let keyringPath = directory.path + "/keyring.json"
        _ = try await seed(directory, keyring: KeyringSource(file: KeyringFile(path: keyringPath)), count: 20)
        let database = try await Database.open(
            .sqlite(path: directory.path + "/keyhaven.sqlite"), logger: Logger(label: "test"))
        let damaged = try await database.transaction { sql in
            let row = try #require(try await sql.raw("SELECT id, wrapped_dek FROM secrets ORDER BY id LIMIT 1").first())
            var wrapped = try row.decode(column: "wrapped_dek", as: Data.self)
            wrapped[20] ^= 0x01
            let id = try row.decode(column: "id", as: UUID.self)
            try await sql.raw("UPDATE secrets SET wrapped_dek = \(bind: wrapped) WHERE id = \(bind: id)").run()
            return id
        }
        await database.shutdown()
        let environment = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/keyhaven.sqlite", "KEYHAVEN_KEYRING_FILE": keyringPath,
        ]
        let result = try await binary.run(["keys", "rotate"], environment: environment, in: directory.path)
        #expect(result.status != 0)
        #expect(lastLine(result.stderr).hasPrefix("keyhaven: error: 1 data keys did not open"), "\(result.stderr)")
        #expect(result.stderr.contains(damaged.uuidString.lowercased()))
        #expect(result.stdout.contains("19 data keys re-wrapped"), "\(result.stdout)")
    }

    @Test("prices import refuses a file that is not a price table with one line, and imports one that is")
    func pricesImport() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let keyringPath = directory.path + "/keyring.json"
        _ = try await seed(directory, keyring: KeyringSource(file: KeyringFile(path: keyringPath)), count: 4)
        let environment = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/keyhaven.sqlite", "KEYHAVEN_KEYRING_FILE": keyringPath,
        ]
        try Data(#"{"m": {"litellm_provider": "openai", "input_cost_per_token": -1}}"#.utf8).write(
            to: URL(fileURLWithPath: directory.path + "/bad.json"))
        let refused = try await binary.run(
            ["prices", "import", "bad.json"], environment: environment, in: directory.path)
        #expect(refused.status != 0)
        #expect(
            lastLine(refused.stderr)
                == "keyhaven: error: The price input_cost_per_token of m is not a number of dollars per token.",
            "\(refused.stderr)")
        let missing = try await binary.run(
            ["prices", "import", "nowhere.json"], environment: environment, in: directory.path)
        #expect(missing.status != 0 && lastLine(missing.stderr).contains("nowhere.json cannot be read"))
        try Data(
            #"{"m": {"litellm_provider": "anthropic", "input_cost_per_token": 1e-06, "output_cost_per_token": 5e-06}}"#
                .utf8
        )
        .write(to: URL(fileURLWithPath: directory.path + "/good.json"))
        let imported = try await binary.run(
            ["prices", "import", "good.json"], environment: environment, in: directory.path)
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout.hasPrefix("Imported prices of 1 models"))
    }

    @Test(
        """
        rotations unretired lists, by the provider's id and never a secret, the \
        credentials an integration deleted mid-rotation left at the provider
        """
    )
    func unretiredKeys() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let keyringPath = directory.path + "/keyring.json"
        let environment = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/keyhaven.sqlite", "KEYHAVEN_KEYRING_FILE": keyringPath,
        ]
        let runtime = try await KeyhavenRuntime.open(
            KeyhavenConfiguration(
                database: .sqlite(path: directory.path + "/keyhaven.sqlite"),
                keyring: KeyringSource(file: KeyringFile(path: keyringPath))),
            allowKeyringCreation: true, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let owner = try await Fixtures.user(in: runtime.database)
        let secret = UUID().uuidString.replacingOccurrences(of: "-", with: "") + "canaryAB"
        let integration = try await runtime.integrations.create(
            ownerID: owner, name: "aws payments", type: .aws, config: [:],
            credentials: .aws(accessKeyID: "AKIAQWERTYUIOPASDFGH", secretAccessKey: secret, sessionToken: nil),
            actor: .system)
        let rotation = try await runtime.rotations.request(
            id: integration.id, ownerID: owner, actor: .system, now: Date())
        _ = try await runtime.rotations.storeNew(
            .aws(accessKeyID: "AKIAPOIUYTREWQLKJHGF", secretAccessKey: secret, sessionToken: nil),
            keyID: "AKIAPOIUYTREWQLKJHGF", for: rotation, now: Date())
        let empty = try await binary.run(["rotations", "unretired"], environment: environment, in: directory.path)
        #expect(empty.status == 0 && empty.stdout.contains("No provider credential waits"), "\(empty.stderr)")
        try await runtime.integrations.delete(id: integration.id, ownerID: owner, actor: .system)
        await runtime.shutdown()

        let listed = try await binary.run(["rotations", "unretired"], environment: environment, in: directory.path)
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect(
            listed.stdout.contains("AKIAPOIUYTREWQLKJHGF") && listed.stdout.contains("aws payments"), "\(listed.stdout)"
        )
        #expect(!listed.stdout.contains(secret) && !listed.stderr.contains(secret))
    }

    @Test("--help works on every command")
    func help() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let commands = [
            [], ["serve"], ["migrate"], ["keys"], ["keys", "status"], ["keys", "rotate"], ["keys", "retire"], ["users"],
            ["users", "create"], ["tokens"], ["tokens", "create-service"], ["tokens", "revoke"], ["audit"],
            ["audit", "verify"],
            ["backup"], ["backup", "verify"], ["restore"], ["prices"], ["prices", "import"], ["rotations"],
            ["rotations", "unretired"],
        ]
        for command in commands {
            let result = try await binary.run(command + ["--help"], in: directory.path)
            #expect(result.status == 0, "\(command)")
            #expect(result.stdout.contains("USAGE: keyhaven"), "\(command)")
        }
    }

    @Test("serve refuses a database written under another master key, with one clear line and a non-zero exit")
    func serveRefusesWrongKey() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let rightKey = Fixtures.masterKeyText()
        _ = try await seed(
            directory, keyring: KeyringSource(environmentKey: try MasterKey(id: "primary", base64: rightKey)), count: 4)
        let wrongKey = Fixtures.masterKeyText()
        let environment = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/keyhaven.sqlite", "KEYHAVEN_MASTER_KEY": wrongKey,
            "KEYHAVEN_PORT": "0",
        ]
        let result = try await binary.run(
            ["serve"], environment: environment, in: directory.path, timeout: .seconds(60))
        #expect(result.status != 0)
        #expect(lastLine(result.stderr).hasPrefix("keyhaven: error: wrong master key: primary"))
        #expect(!result.stderr.contains("Server started"))
        for text in [result.stdout, result.stderr] {
            #expect(!text.contains(wrongKey) && !text.contains(rightKey))
        }

        // Without any key configured, it refuses too, and never generates one for a database that holds secrets.
        var noKey = environment
        noKey["KEYHAVEN_MASTER_KEY"] = nil
        let missing = try await binary.run(["serve"], environment: noKey, in: directory.path, timeout: .seconds(60))
        #expect(missing.status != 0)
        #expect(lastLine(missing.stderr).hasPrefix("keyhaven: error: missing master key: primary"))
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/data/keyring.json"))
    }

    @Test("bad settings and bad arguments fail with one line naming the problem")
    func oneLineFailures() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let cases: [([String], [String: String], String)] = [
            (["serve"], ["KEYHAVEN_PORT": "eighty"], "keyhaven: error: KEYHAVEN_PORT must be a port number"),
            (
                ["migrate"], ["KEYHAVEN_DATABASE_URL": "mysql://x"],
                "keyhaven: error: KEYHAVEN_DATABASE_URL must start with"
            ),
            (
                ["keys", "status"], ["KEYHAVEN_MASTER_KEY": "dG9vIHNob3J0"],
                "keyhaven: error: KEYHAVEN_MASTER_KEY must be"
            ),
            (
                ["keys", "retire", "kek-nope"], ["KEYHAVEN_MASTER_KEY": Fixtures.masterKeyText()],
                "keyhaven: error: no master key named kek-nope"
            ),
            (
                ["keys", "rotate"], ["KEYHAVEN_MASTER_KEY": Fixtures.masterKeyText()],
                "keyhaven: error: rotation needs a keyring file"
            ),
        ]
        for (arguments, environment, expected) in cases {
            var env = environment
            env["KEYHAVEN_DATABASE_URL"] = env["KEYHAVEN_DATABASE_URL"] ?? "sqlite://\(directory.path)/\(UUID()).sqlite"
            let result = try await binary.run(arguments, environment: env, in: directory.path)
            #expect(result.status != 0, "\(arguments)")
            #expect(lastLine(result.stderr).hasPrefix(expected), "\(arguments): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").filter { $0.hasPrefix("keyhaven: error:") }.count == 1)
        }
    }

    @Test("serve creates its keyring on first start, answers, and stops cleanly on SIGTERM")
    func serveAndStop() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let port = Int.random(in: 30000..<60000)
        let server = try binary.start(["serve", "--port", String(port), "--log-format", "json"], in: directory.path)
        let started = await server.waitForStderr { $0.contains("Server started") }
        #expect(started, "\(server.stderr)")
        #expect(server.stderr.contains("GENERATED A NEW MASTER KEYRING"))
        let keyring = directory.path + "/data/keyring.json"
        #expect((try FileManager.default.attributesOfItem(atPath: keyring)[.posixPermissions] as? Int) == 0o600)
        let (body, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/readyz")!)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        #expect(String(decoding: body, as: UTF8.self).contains("\"ready\""))
        server.signal(SIGTERM)
        #expect(await server.wait(timeout: .seconds(20)) == 0)
        // Every log line is one JSON object with a level and a message.
        for line in server.stderr.split(separator: "\n") {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["level"] is String && object?["message"] is String, "\(line)")
        }
        // The key material is in the keyring file only, never in the output.
        let document =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: keyring))) as? [String: Any]
        let material = try #require((document?["keys"] as? [[String: Any]])?.first?["key"] as? String)
        #expect(Data(base64Encoded: material)?.count == 32)
        #expect(!server.stderr.contains(material) && !server.stdout.contains(material))
    }

    @Test(
        """
        serve raises its open-file limit to the hard one and ignores \
        SIGXFSZ, so a file-size limit fails a write instead of killing it
        """
    )
    func serveLimits() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let port = Int.random(in: 30000..<60000)
        // Started with a soft limit of 256 open files, as many systems set it.
        let server = try KeyhavenBinary(path: "/bin/sh").start(
            ["-c", "ulimit -Sn 256 && exec \"$0\" serve --port \(port)", binary.path], in: directory.path)
        defer { if server.isRunning { server.signal(SIGKILL) } }
        #expect(await server.waitForStderr { $0.contains("Server started") }, "\(server.stderr)")
        let pid = server.processIdentifier
        let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
        let openFiles = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
            .split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).prefix(2).compactMap { Int($0) }
        #expect(openFiles.count == 2 && openFiles[0] == openFiles[1] && openFiles[1] > 256, "\(openFiles)")
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let ignored = try #require(
            status.split(separator: "\n").first { $0.hasPrefix("SigIgn:") }.flatMap {
                UInt64($0.dropFirst("SigIgn:".count).trimmingCharacters(in: .whitespaces), radix: 16)
            })
        #expect(ignored & (1 << UInt64(SIGXFSZ - 1)) != 0, "\(String(ignored, radix: 16))")
        server.signal(SIGTERM)
        #expect(await server.wait(timeout: .seconds(20)) == 0)
    }

    @Test("keys rotate killed with SIGKILL midway completes when run again, losing nothing")
    func rotateKilledMidway() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let keyringPath = directory.path + "/keyring.json"
        let source = KeyringSource(file: KeyringFile(path: keyringPath))
        let owners = try await seed(directory, keyring: source, count: 3000)
        let environment = [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(directory.path)/keyhaven.sqlite", "KEYHAVEN_KEYRING_FILE": keyringPath,
        ]
        let rotation = try binary.start(
            ["keys", "rotate", "--progress", "--batch-size", "50", "--pause", "20"], environment: environment,
            in: directory.path)
        let midway = await rotation.waitForStderr { stderr in
            stderr.split(separator: "\n").contains { $0.hasPrefix("re-wrapping: ") && !$0.hasPrefix("re-wrapping: 0/") }
        }
        rotation.signal(SIGKILL)
        #expect(midway, "\(rotation.stderr)")
        #expect(await rotation.wait() == SIGKILL)

        let configuration = KeyhavenConfiguration(
            database: .sqlite(path: directory.path + "/keyhaven.sqlite"), keyring: source)
        let halfway = try await KeyhavenOperations.keyStatus(configuration, logger: Logger(label: "test"))
        #expect(halfway.count == 2)
        #expect(
            halfway.allSatisfy { $0.rows > 0 }, "the kill must land halfway for this test to mean anything: \(halfway)")

        let rerun = try await binary.run(["keys", "rotate"], environment: environment, in: directory.path)
        #expect(rerun.status == 0, "\(rerun.stderr)")
        #expect(rerun.stdout.contains("Finished the interrupted rotation"))
        let status = try await binary.run(["keys", "status"], environment: environment, in: directory.path)
        #expect(status.status == 0)
        #expect(status.stdout.contains("active"))

        let final = try await KeyhavenOperations.keyStatus(configuration, logger: Logger(label: "test"))
        let active = try #require(final.first { $0.active })
        #expect(active.rows == 3000)
        #expect(final.filter { !$0.active }.allSatisfy { $0.rows == 0 })

        // Every secret opens for a fresh process holding only the keyring file.
        let runtime = try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: false, logger: Logger(label: "test"))
        for owner in owners {
            for version in 1...(3000 / owners.count) {
                let (plaintext, _) = try await runtime.secrets.get(owner, version: version)
                #expect(
                    plaintext.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
                        == "sk-\(owner.integrationID)-\(version)")
            }
        }
        await runtime.shutdown()

        // The old key can now be retired by id; the active one cannot.
        let old = try #require(final.first { !$0.active })
        let refused = try await binary.run(["keys", "retire", active.id], environment: environment, in: directory.path)
        #expect(refused.status != 0)
        let retired = try await binary.run(["keys", "retire", old.id], environment: environment, in: directory.path)
        #expect(retired.status == 0, "\(retired.stderr)")
        #expect(try KeyringFile(path: keyringPath).load().ids == [active.id])
    }
}
