import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import SQLKit
import Testing

/// A migrated database with an open keyring and a secret store, for one test.
struct StoreFixture {
    let handle: TestDatabaseHandle
    let keyring: LiveKeyring
    let store: SQLSecretStore
    let logs: LogCapture

    var database: Database { handle.database }

    static func make(_ kind: TestDatabase, source: KeyringSource = Fixtures.environmentKeyring()) async throws
        -> StoreFixture
    {
        let logs = LogCapture()
        let handle = try await kind.make(logger: logs.logger())
        let keyring = try await LiveKeyring.open(
            source: source, database: handle.database, allowCreate: false, logger: logs.logger())
        return StoreFixture(
            handle: handle, keyring: keyring,
            store: SQLSecretStore(database: handle.database, keyring: keyring, logger: logs.logger()), logs: logs)
    }

    func newOwner() async throws -> SecretOwner {
        try await Fixtures.integration(in: database, ownerID: try await Fixtures.user(in: database))
    }

    func close() async { await handle.close() }

    /// Runs `body` with a fresh fixture and closes it afterwards, also when `body` throws.
    static func with(
        _ kind: TestDatabase, source: KeyringSource = Fixtures.environmentKeyring(),
        _ body: (StoreFixture) async throws -> Void
    ) async throws {
        let fixture = try await make(kind, source: source)
        do {
            try await body(fixture)
        } catch {
            await fixture.close()
            throw error
        }
        await fixture.close()
    }
}

func text(_ bytes: SecretBytes) -> String {
    bytes.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
}

@Suite("Secret store")
struct SecretStoreTests {
    @Test("several versions round-trip; the latest is the default", arguments: TestDatabase.all)
    func versions(kind: TestDatabase) async throws {
        try await StoreFixture.with(kind) { fixture in
            let owner = try await fixture.newOwner()
            let values = (1...4).map { "sk-version-\($0)-\(UUID())" }
            for (index, value) in values.enumerated() {
                let info = try await fixture.store.put(SecretBytes(utf8: value), for: owner)
                #expect(info.version == index + 1)
            }
            let (latest, latestInfo) = try await fixture.store.get(owner, version: nil)
            #expect(text(latest) == values.last)
            #expect(latestInfo.version == 4)
            for (index, value) in values.enumerated() {
                let (opened, info) = try await fixture.store.get(owner, version: index + 1)
                #expect(text(opened) == value)
                #expect(info.version == index + 1)
            }
            #expect(try await fixture.store.versions(of: owner).map(\.version) == [4, 3, 2, 1])
            await #expect(throws: KeyhavenError.notFound) { try await fixture.store.get(owner, version: 9) }
        }
    }

    @Test("another owner's integration is not found, for reads and writes", arguments: TestDatabase.all)
    func ownership(kind: TestDatabase) async throws {
        try await StoreFixture.with(kind) { fixture in
            let owner = try await fixture.newOwner()
            let stranger = try await Fixtures.user(in: fixture.database)
            try await fixture.store.put(SecretBytes(utf8: "sk-mine"), for: owner)
            let trespass = SecretOwner(integrationID: owner.integrationID, ownerID: stranger)
            await #expect(throws: KeyhavenError.notFound) { try await fixture.store.get(trespass, version: nil) }
            await #expect(throws: KeyhavenError.notFound) {
                try await fixture.store.put(SecretBytes(utf8: "x"), for: trespass)
            }
            #expect(try await fixture.store.destroyAll(trespass) == 0)
            #expect(try await fixture.store.versions(of: trespass).isEmpty)
            #expect(text(try await fixture.store.get(owner, version: nil).0) == "sk-mine")
        }
    }

    @Test("destroying removes every version", arguments: TestDatabase.all)
    func destroy(kind: TestDatabase) async throws {
        try await StoreFixture.with(kind) { fixture in
            let owner = try await fixture.newOwner()
            let other = try await fixture.newOwner()
            for index in 0..<3 { try await fixture.store.put(SecretBytes(utf8: "v\(index)"), for: owner) }
            try await fixture.store.put(SecretBytes(utf8: "keep"), for: other)
            #expect(try await fixture.store.destroyAll(owner) == 3)
            await #expect(throws: KeyhavenError.notFound) { try await fixture.store.get(owner, version: nil) }
            #expect(text(try await fixture.store.get(other, version: nil).0) == "keep")
        }
    }

    @Test(
        """
        a destroyed version's ciphertext and wrapped key are gone from \
        the database file and its write-ahead log once the destroy returns
        """
    )
    func destroyLeavesNoLog() async throws {
        try await StoreFixture.with(.sqlite) { fixture in
            let owner = try await fixture.newOwner()
            for index in 0..<3 {
                try await fixture.store.put(SecretBytes(utf8: "v\(index)-\(Fixtures.canary())"), for: owner)
            }
            let stored = try await fixture.database.withConnection { sql in
                try await sql.raw(
                    "SELECT ciphertext, wrapped_dek FROM secrets WHERE integration_id = \(bind: owner.integrationID)"
                ).all().flatMap { row in
                    [
                        try row.decode(column: "ciphertext", as: Data.self),
                        try row.decode(column: "wrapped_dek", as: Data.self),
                    ]
                }
            }
            #expect(stored.count == 6)
            // The scan finds them while they are stored (in the log, the file, or both).
            let before = try await fixture.handle.dumpEverything()
            #expect(stored.allSatisfy { containsAnywhere($0, in: before) })
            #expect(try await fixture.store.destroyAll(owner) == 3)
            let after = try await fixture.handle.dumpEverything()
            for bytes in stored { #expect(!containsAnywhere(bytes, in: after), "a destroyed version is still on disk") }
        }
    }

    @Test(
        """
        a reader that holds older pages across a destroy only delays \
        it: once the reader ends, the log is emptied in the background
        """
    )
    func destroyWaitsForReader() async throws {
        try await StoreFixture.with(.sqlite) { fixture in
            let owner = try await fixture.newOwner()
            for index in 0..<2 {
                try await fixture.store.put(SecretBytes(utf8: "v\(index)-\(Fixtures.canary())"), for: owner)
            }
            let stored = try await fixture.database.withConnection { sql in
                try await sql.raw("SELECT ciphertext FROM secrets WHERE integration_id = \(bind: owner.integrationID)")
                    .all().map { try $0.decode(column: "ciphertext", as: Data.self) }
            }
            // A reader in one long transaction, as a backup is, holding the pages from before the destroy.
            let (reading, readingStarted) = AsyncStream<Void>.makeStream()
            let (finish, finishReader) = AsyncStream<Void>.makeStream()
            let reader = Task {
                try await fixture.database.readSnapshot { sql in
                    _ = try await sql.raw("SELECT COUNT(*) AS n FROM secrets").all()
                    readingStarted.yield()
                    for await _ in finish { break }
                }
            }
            for await _ in reading { break }
            #expect(try await fixture.store.destroyAll(owner) == 2)
            let held = try await fixture.handle.dumpEverything()
            #expect(stored.contains { containsAnywhere($0, in: held) }, "the reader kept the log from being emptied")

            finishReader.yield()
            try await reader.value
            // The background retry runs every half second; wait for it (bounded) rather than for a clock.
            var gone = false
            for _ in 0..<120 where !gone {
                try await Task.sleep(for: .milliseconds(250))
                let after = try await fixture.handle.dumpEverything()
                gone = !stored.contains { containsAnywhere($0, in: after) }
            }
            #expect(gone, "a destroyed version is still on disk after the reader ended")
        }
    }

    @Test("concurrent writers get distinct, consecutive versions", arguments: TestDatabase.all)
    func concurrentPuts(kind: TestDatabase) async throws {
        try await StoreFixture.with(kind) { fixture in
            let owner = try await fixture.newOwner()
            let versions = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<20 {
                    group.addTask { try await fixture.store.put(SecretBytes(utf8: "v\(index)"), for: owner).version }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(versions.sorted() == Array(1...20))
        }
    }

    @Test(
        "a flipped byte in a stored nonce, ciphertext or wrapped key fails with an error", arguments: TestDatabase.all)
    func tamperedRow(kind: TestDatabase) async throws {
        try await StoreFixture.with(kind) { fixture in
            for column in ["nonce", "ciphertext", "wrapped_dek"] {
                let owner = try await fixture.newOwner()
                try await fixture.store.put(SecretBytes(utf8: "sk-tamper-\(column)"), for: owner)
                try await fixture.database.transaction { sql in
                    let row = try await sql.raw(
                        "SELECT id, \(ident: column) FROM secrets WHERE integration_id = \(bind: owner.integrationID)"
                    ).first()!
                    var bytes = try row.decode(column: column, as: Data.self)
                    bytes[bytes.startIndex + bytes.count / 2] ^= 0x01
                    try await sql.raw(
                        """
                        UPDATE secrets SET \(ident: column) = \(bind: bytes) WHERE \
                        id = \(bind: try row.decode(column: "id", as: UUID.self))
                        """
                    ).run()
                }
                await #expect(throws: KeyhavenError.decryptionFailed) {
                    try await fixture.store.get(owner, version: nil)
                }
            }
            #expect(!fixture.logs.all.contains { $0.contains("sk-tamper") })
        }
    }

    @Test("a ciphertext copied into another row, or to another owner, fails to open", arguments: TestDatabase.all)
    func copiedCiphertext(kind: TestDatabase) async throws {
        try await StoreFixture.with(kind) { fixture in
            let victim = try await fixture.newOwner()
            try await fixture.store.put(SecretBytes(utf8: "sk-victim-v1"), for: victim)
            try await fixture.store.put(SecretBytes(utf8: "sk-victim-v2"), for: victim)
            let attacker = try await fixture.newOwner()
            try await fixture.store.put(SecretBytes(utf8: "sk-attacker"), for: attacker)

            func copy(from source: SecretOwner, version: Int, to target: SecretOwner, targetVersion: Int) async throws {
                try await fixture.database.transaction { sql in
                    let row = try await sql.raw(
                        """
                        SELECT kek_id, wrapped_dek, nonce, ciphertext FROM secrets WHERE \
                        integration_id = \(bind: source.integrationID) AND version = \(bind: version)
                        """
                    ).first()!
                    try await sql.raw(
                        """
                        UPDATE secrets SET kek_id = \(bind: try row.decode(column: "kek_id", as: String.self)),
                        wrapped_dek = \(bind: try row.decode(column: "wrapped_dek", as: Data.self)),
                        nonce = \(bind: try row.decode(column: "nonce", as: Data.self)),
                        ciphertext = \(bind: try row.decode(column: "ciphertext", as: Data.self))
                        WHERE integration_id = \(bind: target.integrationID) AND version = \(bind: targetVersion)
                        """
                    ).run()
                }
            }
            // Another owner's row.
            try await copy(from: victim, version: 2, to: attacker, targetVersion: 1)
            await #expect(throws: KeyhavenError.decryptionFailed) { try await fixture.store.get(attacker, version: 1) }
            // Another version of the same integration.
            try await copy(from: victim, version: 2, to: victim, targetVersion: 1)
            await #expect(throws: KeyhavenError.decryptionFailed) { try await fixture.store.get(victim, version: 1) }
            // The row itself still opens.
            #expect(text(try await fixture.store.get(victim, version: 2).0) == "sk-victim-v2")
            // The owner column rewritten to another user (with the integration moved too) does not open either.
            let otherUser = try await Fixtures.user(in: fixture.database)
            try await fixture.database.transaction { sql in
                try await sql.raw(
                    "UPDATE integrations SET owner_id = \(bind: otherUser) WHERE id = \(bind: victim.integrationID)"
                ).run()
                try await sql.raw(
                    """
                    UPDATE secrets SET owner_id = \(bind: otherUser) \
                    WHERE integration_id = \(bind: victim.integrationID)
                    """
                ).run()
            }
            let moved = SecretOwner(integrationID: victim.integrationID, ownerID: otherUser)
            await #expect(throws: KeyhavenError.decryptionFailed) { try await fixture.store.get(moved, version: 2) }
        }
    }

    @Test(
        "stored canaries appear nowhere in the database files or tables, nor in the logs", arguments: TestDatabase.all)
    func canaryScan(kind: TestDatabase) async throws {
        try await StoreFixture.with(kind) { fixture in
            var canaries: [String] = []
            for _ in 0..<5 {
                let owner = try await fixture.newOwner()
                for _ in 0..<3 {
                    let canary = Fixtures.canary()
                    canaries.append(canary)
                    try await fixture.store.put(SecretBytes(utf8: canary), for: owner)
                }
                #expect(text(try await fixture.store.get(owner, version: nil).0) == canaries.last)
            }
            let destroyed = try await fixture.newOwner()
            let destroyedCanary = Fixtures.canary("destroyed")
            canaries.append(destroyedCanary)
            try await fixture.store.put(SecretBytes(utf8: destroyedCanary), for: destroyed)
            try await fixture.store.destroyAll(destroyed)

            let dumps = try await fixture.handle.dumpEverything()
            #expect(!dumps.isEmpty)
            // The scan itself works: a value that is stored in clear (an email) is found.
            let email = "visible-\(UUID())@example.test"
            _ = try await Fixtures.user(in: fixture.database, email: email)
            #expect(containsAnywhere(Data(email.utf8), in: try await fixture.handle.dumpEverything()))
            for canary in canaries {
                #expect(!containsAnywhere(Data(canary.utf8), in: dumps), "canary found in the database")
                #expect(!fixture.logs.all.contains { $0.contains(canary) })
            }
        }
    }
}
