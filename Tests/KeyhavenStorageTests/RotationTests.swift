import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import SQLKit
import Synchronization
import Testing

@Suite("Master key rotation")
struct RotationTests {
    struct Setup {
        let handle: TestDatabaseHandle
        let source: KeyringSource
        let store: SQLSecretStore
        let owners: [SecretOwner]
        var management: KeyManagement {
            KeyManagement(database: handle.database, source: source, logger: Logger(label: "test"))
        }
    }

    /// A database with `count` secrets spread over a few integrations, under a keyring file.
    func setup(_ kind: TestDatabase, count: Int) async throws -> Setup {
        let handle = try await kind.make()
        let source = KeyringSource(file: KeyringFile(path: handle.directory.path + "/keyring.json"))
        let live = try await LiveKeyring.open(
            source: source, database: handle.database, allowCreate: true, logger: Logger(label: "test"))
        let store = SQLSecretStore(database: handle.database, keyring: live, logger: Logger(label: "test"))
        var owners: [SecretOwner] = []
        for _ in 0..<10 {
            owners.append(
                try await Fixtures.integration(
                    in: handle.database, ownerID: try await Fixtures.user(in: handle.database)))
        }
        let perOwner = count / owners.count
        try await withThrowingTaskGroup(of: Void.self) { group in
            for owner in owners {
                group.addTask {
                    for index in 0..<perOwner {
                        try await store.put(SecretBytes(utf8: "secret-\(owner.integrationID)-\(index + 1)"), for: owner)
                    }
                }
            }
            try await group.waitForAll()
        }
        return Setup(handle: handle, source: source, store: store, owners: owners)
    }

    func expectAllOpen(_ setup: Setup, perOwner: Int) async throws {
        // A fresh process view: only the keys in the file, checked against the database.
        let live = try await LiveKeyring.open(
            source: setup.source, database: setup.handle.database, allowCreate: false, logger: Logger(label: "test"))
        let store = SQLSecretStore(database: setup.handle.database, keyring: live, logger: Logger(label: "test"))
        for owner in setup.owners {
            for version in 1...perOwner {
                let (plaintext, _) = try await store.get(owner, version: version)
                #expect(text(plaintext) == "secret-\(owner.integrationID)-\(version)")
            }
        }
    }

    @Test(
        "rotation re-wraps every data key; nothing references the old key, which can then be retired",
        arguments: TestDatabase.all)
    func rotateAll(kind: TestDatabase) async throws {
        let setup = try await setup(kind, count: 3000)
        defer { Task { await setup.handle.close() } }
        let before = try await setup.management.status()
        let oldKey = try #require(before.first { $0.active })
        #expect(oldKey.rows == 3000)
        let ciphertextsBefore = try await ciphertexts(setup.handle.database)

        // The old key is still referenced: it cannot be retired yet.
        await #expect(throws: KeyhavenError.self) { try await setup.management.retire(id: oldKey.id) }

        let progress = Mutex<[RotationProgress]>([])
        let result = try await setup.management.rotate(batchSize: 250) { update in
            progress.withLock { $0.append(update) }
        }
        #expect(!result.resumed)
        #expect(result.rewrapped == 3000)
        #expect(result.activeKeyID != oldKey.id)
        #expect(result.retirable == [oldKey.id])
        #expect(progress.withLock { $0.last?.done } == 3000)

        let after = try await setup.management.status()
        #expect(after.first { $0.id == oldKey.id }?.rows == 0)
        #expect(after.first { $0.active }?.rows == 3000)
        #expect(after.first { $0.active }?.wraps == 3000)
        // Only the data keys changed: every ciphertext and nonce is byte for byte the same.
        #expect(try await ciphertexts(setup.handle.database) == ciphertextsBefore)
        try await expectAllOpen(setup, perOwner: 300)

        // The active key cannot be retired; the old one now can, and leaves the file.
        await #expect(throws: KeyhavenError.self) { try await setup.management.retire(id: result.activeKeyID) }
        try await setup.management.retire(id: oldKey.id)
        #expect(try setup.source.file!.load().ids == [result.activeKeyID])
        #expect(try await setup.management.status().map(\.id) == [result.activeKeyID])
        try await expectAllOpen(setup, perOwner: 300)
    }

    @Test("a rotation interrupted midway is finished by the next run, losing nothing", arguments: TestDatabase.all)
    func interrupted(kind: TestDatabase) async throws {
        let setup = try await setup(kind, count: 2000)
        defer { Task { await setup.handle.close() } }
        let management = setup.management
        let batches = Mutex(0)
        let task = Task {
            try await management.rotate(batchSize: 100, pause: .milliseconds(20)) { update in
                if update.done > 0 { batches.withLock { $0 += 1 } }
            }
        }
        while batches.withLock({ $0 }) < 3 { try await Task.sleep(for: .milliseconds(2)) }
        task.cancel()
        _ = await task.result
        let midway = try await management.status()
        let newKey = try #require(midway.first { $0.active })
        let oldKey = try #require(midway.first { !$0.active })
        #expect(newKey.rows > 0 && oldKey.rows > 0, "the first run must stop halfway for this test to mean anything")
        #expect(newKey.rows + oldKey.rows == 2000)

        let result = try await management.rotate(batchSize: 100)
        #expect(result.resumed)
        #expect(result.activeKeyID == newKey.id)
        #expect(result.rewrapped == oldKey.rows)
        let final = try await management.status()
        #expect(final.first { $0.id == oldKey.id }?.rows == 0)
        #expect(try setup.source.file!.load().ids.count == 2, "resuming must not create another key")
        try await expectAllOpen(setup, perOwner: 200)
    }

    @Test(
        """
        one data key that does not unwrap is reported by id; \
        every other row is re-wrapped, the bad one left as it was
        """,
        arguments: TestDatabase.all)
    func survivesBadRow(kind: TestDatabase) async throws {
        let setup = try await setup(kind, count: 50)
        defer { Task { await setup.handle.close() } }
        let (bad, damaged) = try await setup.handle.database.transaction { sql in
            let row = try #require(
                try await sql.raw("SELECT id, wrapped_dek FROM secrets ORDER BY id LIMIT 1 OFFSET 20").first())
            var wrapped = try row.decode(column: "wrapped_dek", as: Data.self)
            wrapped[20] ^= 0x01
            let id = try row.decode(column: "id", as: UUID.self)
            try await sql.raw("UPDATE secrets SET wrapped_dek = \(bind: wrapped) WHERE id = \(bind: id)").run()
            return (id, wrapped)
        }
        let result = try await setup.management.rotate(batchSize: 7)
        #expect(result.failed == [bad])
        #expect(result.rewrapped == 49)
        let statuses = try await setup.management.status()
        #expect(statuses.first { $0.active }?.rows == 49)
        #expect(statuses.first { !$0.active }?.rows == 1)
        let left = try await setup.handle.database.transaction { sql in
            try await sql.raw("SELECT wrapped_dek FROM secrets WHERE id = \(bind: bad)").first()?.decode(
                column: "wrapped_dek", as: Data.self)
        }
        #expect(left == damaged, "the operator's row is untouched")
        // A second run resumes, reports the same row again, and does not loop.
        let again = try await setup.management.rotate()
        #expect(again.resumed && again.failed == [bad] && again.rewrapped == 0)
    }

    @Test("rotation needs a keyring file to hold the new key")
    func needsFile() async throws {
        let handle = try await TestDatabase.sqlite.make()
        defer { Task { await handle.close() } }
        let source = Fixtures.environmentKeyring()
        _ = try await LiveKeyring.open(
            source: source, database: handle.database, allowCreate: false, logger: Logger(label: "test"))
        await #expect(throws: KeyhavenError.self) {
            _ = try await KeyManagement(database: handle.database, source: source, logger: Logger(label: "test"))
                .rotate()
        }
    }

    func ciphertexts(_ database: Database) async throws -> [String: Data] {
        try await database.transaction { sql in
            var result: [String: Data] = [:]
            for row in try await sql.raw("SELECT id, nonce, ciphertext FROM secrets").all() {
                result[try row.decode(column: "id", as: UUID.self).uuidString] =
                    try row.decode(column: "nonce", as: Data.self) + row.decode(column: "ciphertext", as: Data.self)
            }
            return result
        }
    }
}
