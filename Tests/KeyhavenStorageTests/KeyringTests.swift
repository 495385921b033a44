import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import SQLKit
import Testing

@Suite("Keyring start-up checks")
struct KeyringTests {
    func withDatabase(_ kind: TestDatabase, _ body: (TestDatabaseHandle) async throws -> Void) async throws {
        let handle = try await kind.make()
        do { try await body(handle) } catch {
            await handle.close()
            throw error
        }
        await handle.close()
    }

    func keyringMessage(_ body: () async throws -> Void) async -> String? {
        do {
            try await body()
            return nil
        } catch let KeyhavenError.keyring(message) {
            return message
        } catch {
            return "unexpected: \(error)"
        }
    }

    @Test("a keyring file that group or others can read is refused with how to fix it", arguments: TestDatabase.all)
    func refusesOpenKeyringFile(kind: TestDatabase) async throws {
        try await withDatabase(kind) { handle in
            let file = KeyringFile(path: handle.directory.path + "/keyring.json")
            try file.save(Keyring([MasterKey.generate()]))
            for mode in [0o640, 0o604, 0o660] {
                try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file.path)
                let message = await keyringMessage {
                    _ = try await LiveKeyring.open(
                        source: KeyringSource(file: file), database: handle.database, allowCreate: true,
                        logger: Logger(label: "test"))
                }
                #expect(
                    message
                        == "the keyring file \(file.path) can be read by other "
                        + "users; restrict it with: chmod 600 \(file.path)"
                )
            }
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file.path)
            _ = try await LiveKeyring.open(
                source: KeyringSource(file: file), database: handle.database, allowCreate: true,
                logger: Logger(label: "test"))
        }
    }

    @Test("an existing SQLite file and its WAL left readable by others are set to 0600 when opened")
    func restrictsSQLiteFiles() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/keyhaven.sqlite"
        let first = try await Database.open(.sqlite(path: path), logger: Logger(label: "test"))
        try await Migrator(database: first).migrate()
        await first.shutdown()
        for file in [path, path + "-wal", path + "-shm"] where FileManager.default.fileExists(atPath: file) {
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file)
        }
        let database = try await Database.open(.sqlite(path: path), logger: Logger(label: "test"))
        try await database.transaction { sql in try await sql.raw("SELECT COUNT(*) FROM users").run() }
        for file in [path, path + "-wal"] {
            #expect(
                (try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int) == 0o600, "\(file)")
        }
        await database.shutdown()
    }

    @Test("a fresh database gets a generated keyring file, mode 0600, announced loudly", arguments: TestDatabase.all)
    func generatesForFreshDatabase(kind: TestDatabase) async throws {
        try await withDatabase(kind) { handle in
            let file = KeyringFile(path: handle.directory.path + "/data/keyring.json")
            let logs = LogCapture()
            let live = try await LiveKeyring.open(
                source: KeyringSource(file: file), database: handle.database, allowCreate: true, logger: logs.logger())
            #expect(file.exists)
            #expect((try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int) == 0o600)
            #expect(try file.load().ids == live.ids)
            #expect(logs.all.contains { $0.hasPrefix("critical") && $0.contains("BACK IT UP") })
            // Opening again uses the same key and generates nothing.
            let again = try await LiveKeyring.open(
                source: KeyringSource(file: file), database: handle.database, allowCreate: true, logger: logs.logger())
            #expect(again.ids == live.ids)
            #expect(try file.load().ids.count == 1)
        }
    }

    @Test(
        "no key is generated when not allowed (CLI commands) or when the database already holds secrets",
        arguments: TestDatabase.all)
    func neverGeneratesForExistingSecrets(kind: TestDatabase) async throws {
        try await withDatabase(kind) { handle in
            let missingFile = KeyringFile(path: handle.directory.path + "/missing/keyring.json")
            let refusal = await keyringMessage {
                _ = try await LiveKeyring.open(
                    source: KeyringSource(file: missingFile), database: handle.database, allowCreate: false,
                    logger: Logger(label: "test"))
            }
            #expect(refusal?.contains("no master key is configured") == true)
            #expect(!missingFile.exists)

            // Store a secret under a file keyring, then lose the file.
            let file = KeyringFile(path: handle.directory.path + "/keyring.json")
            let live = try await LiveKeyring.open(
                source: KeyringSource(file: file), database: handle.database, allowCreate: true,
                logger: Logger(label: "test"))
            let store = SQLSecretStore(database: handle.database, keyring: live, logger: Logger(label: "test"))
            let owner = try await Fixtures.integration(
                in: handle.database, ownerID: try await Fixtures.user(in: handle.database))
            try await store.put(SecretBytes(utf8: "sk-keep"), for: owner)
            try FileManager.default.removeItem(atPath: file.path)

            let message = await keyringMessage {
                _ = try await LiveKeyring.open(
                    source: KeyringSource(file: file), database: handle.database, allowCreate: true,
                    logger: Logger(label: "test"))
            }
            #expect(message?.hasPrefix("missing master key") == true)
            #expect(message?.contains("does not exist") == true)
            #expect(!file.exists, "a key must never be generated for a database that holds secrets")
        }
    }

    @Test("a wrong master key is refused by its canary, naming the problem", arguments: TestDatabase.all)
    func wrongKey(kind: TestDatabase) async throws {
        try await withDatabase(kind) { handle in
            _ = try await LiveKeyring.open(
                source: Fixtures.environmentKeyring(), database: handle.database, allowCreate: false,
                logger: Logger(label: "test"))
            let message = await keyringMessage {
                _ = try await LiveKeyring.open(
                    source: Fixtures.environmentKeyring(), database: handle.database, allowCreate: false,
                    logger: Logger(label: "test"))
            }
            #expect(message?.hasPrefix("wrong master key: primary") == true)
            let renamed = await keyringMessage {
                _ = try await LiveKeyring.open(
                    source: Fixtures.environmentKeyring(id: "other"), database: handle.database, allowCreate: false,
                    logger: Logger(label: "test"))
            }
            #expect(renamed?.hasPrefix("missing master key: primary") == true)
        }
    }

    @Test(
        "a server that meets a key rotated in by another process loads it from the keyring file",
        arguments: TestDatabase.all)
    func reloadsRotatedKey(kind: TestDatabase) async throws {
        try await withDatabase(kind) { handle in
            let file = KeyringFile(path: handle.directory.path + "/keyring.json")
            let source = KeyringSource(file: file)
            let server = try await LiveKeyring.open(
                source: source, database: handle.database, allowCreate: true, logger: Logger(label: "test"))
            let store = SQLSecretStore(database: handle.database, keyring: server, logger: Logger(label: "test"))
            let owner = try await Fixtures.integration(
                in: handle.database, ownerID: try await Fixtures.user(in: handle.database))
            try await store.put(SecretBytes(utf8: "sk-before"), for: owner)

            _ = try await KeyManagement(database: handle.database, source: source, logger: Logger(label: "test"))
                .rotate()
            #expect(server.ids.count == 1)
            // The server reads the re-wrapped row and writes under the new key without a restart.
            #expect(text(try await store.get(owner, version: nil).0) == "sk-before")
            try await store.put(SecretBytes(utf8: "sk-after"), for: owner)
            #expect(server.ids.count == 2)
            #expect(text(try await store.get(owner, version: 2).0) == "sk-after")
        }
    }
}
