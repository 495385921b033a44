import Crypto
import Foundation
import KeyhavenBackup
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenTestSupport
import Logging
import SQLKit
import Synchronization
import Testing

@testable import KeyhavenApp

/// Backups and restores through the library, on SQLite and PostgreSQL (SPEC §14).
@Suite("Backup and restore")
struct BackupTests {
    /// Source → target pairs: SQLite → SQLite always, and with PostgreSQL both directions across.
    static var pairs: [(TestDatabase, TestDatabase)] {
        TestDatabase.all.contains(.postgres)
            ? [(.sqlite, .sqlite), (.sqlite, .postgres), (.postgres, .sqlite)] : [(.sqlite, .sqlite)]
    }

    static let fastKDF = BackupKDF(name: "scrypt", log2N: 10, r: 8, p: 1)

    func openRuntime(_ handle: TestDatabaseHandle, keyringPath: String) async throws -> KeyhavenRuntime {
        let configuration = KeyhavenConfiguration(
            database: handle.location, keyring: KeyringSource(file: KeyringFile(path: keyringPath)))
        return try await KeyhavenRuntime.open(
            configuration, allowKeyringCreation: true, logger: Logger(label: "test"), database: handle.database)
    }

    func restore(
        _ path: String, into handle: TestDatabaseHandle, secret: BackupSecret, keyringPath: String
    ) async throws -> RestoreSummary {
        let source = try FileByteSource(path: path)
        defer { source.close() }
        let reader = try BackupReader(source: source, secret: secret)
        return try await DatabaseBackup(database: handle.database, logger: Logger(label: "test")).restore(
            from: reader, configured: KeyringSource(file: KeyringFile(path: keyringPath)))
    }

    func isEmpty(_ handle: TestDatabaseHandle) async throws -> Bool {
        try await BackupScenario.counts(handle.database).values.allSatisfy { $0 == 0 }
    }

    @Test(
        "a round trip with every kind of row: every credential opens and equals the original, the chain verifies",
        arguments: pairs)
    func roundTrip(from source: TestDatabase, to target: TestDatabase) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let sourceHandle = try await source.make()
        defer { Task { await sourceHandle.close() } }
        let targetHandle = try await target.make()
        defer { Task { await targetHandle.close() } }
        let runtime = try await openRuntime(sourceHandle, keyringPath: directory.path + "/keyring.json")
        let scenario = try await BackupScenario.populate(runtime)
        let before = try await BackupScenario.counts(sourceHandle.database)
        #expect(before.values.allSatisfy { $0 > 0 }, "every table holds rows: \(before)")
        #expect(try await masterKeyCount(sourceHandle.database) == 2, "a rotated master key")

        // Into SQLite the master keys travel inside the backup; into PostgreSQL the target uses the same keyring.
        let includeKeyring = target == .sqlite
        let secret = try BackupSecret.passphrase("a long backup passphrase")
        let output = directory.path + "/keyhaven.khbackup"
        let result = try await KeyhavenOperations.takeBackup(
            runtime, output: output, secret: secret, includeKeyring: includeKeyring, kdf: Self.fastKDF,
            chunkSize: 4096, actor: .operator, progress: { _ in })
        #expect(result.bytes == Int64((try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? -1))
        #expect(Dictionary(uniqueKeysWithValues: result.header.tables.map { ($0.name, $0.rows) }) == before)
        await runtime.shutdown()

        let targetKeyring =
            includeKeyring ? directory.path + "/restored-keyring.json" : directory.path + "/keyring.json"
        let summary = try await restore(output, into: targetHandle, secret: secret, keyringPath: targetKeyring)
        #expect(summary.secretsOpened == scenario.credentials.values.reduce(0) { $0 + $1.versions.count })
        #expect(summary.keysWritten.count == (includeKeyring ? 2 : 0))
        var after = try await BackupScenario.counts(targetHandle.database)
        // The restore is itself audited: one event more than the snapshot.
        after["audit_events"] = after["audit_events"].map { $0 - 1 }
        #expect(after == before)

        let restored = try await openRuntime(targetHandle, keyringPath: targetKeyring)
        #expect(await scenario.problems(in: restored) == [])
        guard case .intact = try await restored.audit.verify() else {
            Issue.record("the restored audit chain does not verify")
            return
        }
        await restored.shutdown()
    }

    @Test(
        "a damaged, truncated, reordered or wrongly keyed backup is refused with its own message, database untouched",
        arguments: TestDatabase.all)
    func damagedBackups(target: TestDatabase) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let sourceHandle = try await TestDatabase.sqlite.make()
        defer { Task { await sourceHandle.close() } }
        let runtime = try await openRuntime(sourceHandle, keyringPath: directory.path + "/keyring.json")
        _ = try await BackupScenario.populate(runtime, users: 2, integrationsPerUser: 10)
        let secret = try BackupSecret.passphrase("a long backup passphrase")
        let output = directory.path + "/keyhaven.khbackup"
        _ = try await KeyhavenOperations.takeBackup(
            runtime, output: output, secret: secret, includeKeyring: true, kdf: Self.fastKDF, chunkSize: 1024,
            actor: .operator, progress: { _ in })
        await runtime.shutdown()
        let good = try Data(contentsOf: URL(fileURLWithPath: output))
        let bytes = Array(good)
        let preamble = 14 + bytes[10..<14].reduce(0) { $0 << 8 | Int($1) } + 64
        var chunks: [Range<Int>] = []
        var offset = preamble
        while offset < bytes.count {
            let length = bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
            chunks.append(offset..<(offset + 4 + length))
            offset += 4 + length
        }
        #expect(chunks.count >= 6)
        func flipped(_ position: Int) -> Data {
            var copy = good
            copy[position] ^= 0x80
            return copy
        }
        let middle = chunks.count / 2
        var swapped = Data(good[..<chunks[1].lowerBound])
        swapped.append(good[chunks[2]])
        swapped.append(good[chunks[1]])
        swapped.append(good[chunks[3].lowerBound...])
        let cases: [(String, Data, BackupSecret, BackupError)] = [
            ("flipped magic", flipped(3), secret, .notABackup),
            ("flipped header", flipped(preamble - 1), secret, .damagedHeader("its MAC does not match")),
            ("flipped chunk", flipped(chunks[middle].lowerBound + 30), secret, .tampered(chunk: middle)),
            (
                "flipped tag", flipped(chunks[chunks.count - 1].upperBound - 1), secret,
                .tampered(chunk: chunks.count - 1)
            ),
            ("truncated", good.prefix(chunks[middle].upperBound), secret, .truncated(afterChunks: middle + 1)),
            ("swapped", swapped, secret, .reordered(chunk: 1, holds: 2)),
            ("wrong passphrase", good, try .passphrase("another long passphrase"), .wrongKey),
        ]
        let targetHandle = try await target.make()
        defer { Task { await targetHandle.close() } }
        var messages: Set<String> = []
        for (name, data, key, expected) in cases {
            let path = directory.path + "/damaged.khbackup"
            try data.write(to: URL(fileURLWithPath: path))
            do {
                _ = try await restore(
                    path, into: targetHandle, secret: key, keyringPath: directory.path + "/target.json")
                Issue.record("\(name) was restored")
            } catch let error as BackupError {
                #expect(error == expected, "\(name)")
                messages.insert(error.description)
            }
            #expect(try await isEmpty(targetHandle), "\(name) left rows behind")
            #expect(!FileManager.default.fileExists(atPath: directory.path + "/target.json"), "\(name) wrote keys")
        }
        #expect(messages.count == cases.count, "each case has its own message")
        // And the untouched backup restores into the same database afterwards.
        _ = try await restore(output, into: targetHandle, secret: secret, keyringPath: directory.path + "/target.json")
        #expect(!(try await isEmpty(targetHandle)))
    }

    @Test("a restore into a database that is not empty is refused and changes nothing", arguments: TestDatabase.all)
    func nonEmptyTarget(target: TestDatabase) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let sourceHandle = try await TestDatabase.sqlite.make()
        defer { Task { await sourceHandle.close() } }
        let runtime = try await openRuntime(sourceHandle, keyringPath: directory.path + "/keyring.json")
        _ = try await BackupScenario.populate(runtime, users: 1, integrationsPerUser: 2)
        let keyFile = try makeBackupKeyFile(in: directory.path)
        let output = directory.path + "/keyhaven.khbackup"
        _ = try await KeyhavenOperations.takeBackup(
            runtime, output: output, secret: try .keyFile(keyFile), includeKeyring: true, kdf: .standard,
            chunkSize: 4096, actor: .operator, progress: { _ in })
        await runtime.shutdown()

        let targetHandle = try await target.make()

        defer { Task { await targetHandle.close() } }
        let occupant = try await openRuntime(targetHandle, keyringPath: directory.path + "/target.json")
        _ = try await occupant.users.create(
            email: "someone@example.test", passwordHash: "x", audit: AuditEntry(actor: .operator, action: .signup))
        let before = try await BackupScenario.counts(targetHandle.database)
        let keyringBefore = try Data(contentsOf: URL(fileURLWithPath: directory.path + "/target.json"))
        await #expect(throws: KeyhavenError.self) {
            _ = try await restore(
                output, into: targetHandle, secret: try .keyFile(keyFile), keyringPath: directory.path + "/target.json")
        }
        #expect(try await BackupScenario.counts(targetHandle.database) == before)
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.path + "/target.json")) == keyringBefore)
        await occupant.shutdown()
    }

    @Test("the backup file holds no credential in clear, and master keys only inside its encryption when asked")
    func noSecretsInClear() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let handle = try await TestDatabase.sqlite.make()
        defer { Task { await handle.close() } }
        let runtime = try await openRuntime(handle, keyringPath: directory.path + "/keyring.json")
        let scenario = try await BackupScenario.populate(runtime, users: 2, integrationsPerUser: 2)
        let keyFile = try makeBackupKeyFile(in: directory.path)
        let masterKeys = try KeyringFile(path: directory.path + "/keyring.json").load()
        let keyText = try String(contentsOfFile: directory.path + "/keyring.json", encoding: .utf8)
        for includeKeyring in [false, true] {
            let output = directory.path + "/backup-\(includeKeyring).khbackup"
            _ = try await KeyhavenOperations.takeBackup(
                runtime, output: output, secret: try .keyFile(keyFile), includeKeyring: includeKeyring, kdf: .standard,
                chunkSize: 4096, actor: .operator, progress: { _ in })
            let data = try Data(contentsOf: URL(fileURLWithPath: output))
            for canary in scenario.canaries {
                #expect(!containsAnywhere(Data(canary.utf8), in: [data]), "a credential in clear")
            }
            // The keyring file's base64 key material never appears, in any form.
            for line in keyText.split(separator: "\"") where line.count == 44 {
                if let material = Data(base64Encoded: String(line)) {
                    #expect(!containsAnywhere(material, in: [data]), "a master key in clear")
                }
            }
            let source = try FileByteSource(path: output)
            let reader = try BackupReader(source: source, secret: try .keyFile(keyFile))
            var inside: Keyring?
            while let record = try reader.next() {
                if case .keyring(let keyring) = record { inside = keyring }
            }
            source.close()
            #expect(reader.header.includesKeyring == includeKeyring)
            #expect((inside?.ids.sorted() ?? []) == (includeKeyring ? masterKeys.ids.sorted() : []))
        }
        await runtime.shutdown()
    }

    @Test("a backup taken while the server writes is one consistent snapshot", arguments: TestDatabase.all)
    func consistentUnderWrites(kind: TestDatabase) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let handle = try await kind.make()
        defer { Task { await handle.close() } }
        let runtime = try await openRuntime(handle, keyringPath: directory.path + "/keyring.json")
        let user = try await runtime.users.create(
            email: "writer@example.test", passwordHash: "x", audit: AuditEntry(actor: .operator, action: .signup))
        let actor = AuditActor(kind: .user, id: user.id.uuidString.lowercased())
        for index in 0..<60 {
            _ = try await runtime.integrations.create(
                ownerID: user.id, name: "seed \(index)", type: .openai, config: [:],
                credentials: .apiKey("sk-seed-\(index)"),
                actor: actor)
        }
        let keyFile = try makeBackupKeyFile(in: directory.path)
        let stop = ManagedFlag()
        defer { stop.set() }
        let writes = Task {
            var created: [UUID] = []
            var count = 0
            while !stop.isSet {
                count += 1
                stop.count(count)
                let integration = try await runtime.integrations.create(
                    ownerID: user.id, name: "live \(count)", type: .openai, config: [:],
                    credentials: .apiKey("sk-live-\(count)"), actor: actor)
                created.append(integration.id)
                if count % 2 == 0 {
                    _ = try await runtime.integrations.update(
                        id: integration.id, ownerID: user.id,
                        changes: IntegrationChanges(credentials: .apiKey("sk-live-\(count)-b")), actor: actor)
                }
                if count % 3 == 0, let victim = created.first {
                    created.removeFirst()
                    try await runtime.integrations.delete(id: victim, ownerID: user.id, actor: actor)
                }
            }
            return count
        }
        // Small pages, and after each page a wait (bounded) until one more write has finished, so the snapshot
        // spans many writes however the threads are scheduled.
        let output = directory.path + "/live.khbackup"
        while stop.written < 2 { try await Task.sleep(for: .milliseconds(10)) }
        let before = stop.written
        _ = try await KeyhavenOperations.takeBackup(
            runtime, output: output, secret: try .keyFile(keyFile), includeKeyring: false, kdf: .standard,
            chunkSize: 4096, pageSize: 10, actor: .operator,
            progress: { _ in
                // The writer numbers a write when it starts it, so two more means one more has finished.
                let target = stop.written + 2
                let deadline = ContinuousClock.now + .seconds(5)
                while stop.written < target, ContinuousClock.now < deadline { usleep(1_000) }
            })
        let during = stop.written - before
        stop.set()
        _ = try await writes.value
        #expect(during > 0, "the writers ran during the backup")
        await runtime.shutdown()

        let target = try await TestDatabase.sqlite.make()

        defer { Task { await target.close() } }
        _ = try await restore(
            output, into: target, secret: try .keyFile(keyFile), keyringPath: directory.path + "/keyring.json")
        let (orphanSecrets, missingSecrets) = try await target.database.withConnection { sql in
            let orphans =
                try await sql.raw(
                    """
                    SELECT COUNT(*) AS n FROM secrets s WHERE NOT EXISTS \
                    (SELECT 1 FROM integrations i WHERE i.id = s.integration_id)
                    """
                ).first()?.decode(column: "n", as: Int.self) ?? -1
            let missing =
                try await sql.raw(
                    """
                    SELECT COUNT(*) AS n FROM integrations i WHERE i.current_version > 0 AND NOT EXISTS
                    (SELECT 1 FROM secrets s WHERE s.integration_id = i.id AND s.version = i.current_version)
                    """
                ).first()?.decode(column: "n", as: Int.self) ?? -1
            return (orphans, missing)
        }
        #expect(orphanSecrets == 0 && missingSecrets == 0)
    }

    @Test("of two instances sharing a database, only one claims each scheduled backup", arguments: TestDatabase.all)
    func oneClaimPerBackup(kind: TestDatabase) async throws {
        let handle = try await kind.make()
        defer { Task { await handle.close() } }
        let second = try await Database.open(
            handle.location, searchPath: handle.schema.map { [$0] }, logger: Logger(label: "test"))
        let schedules = [BackupSchedule(database: handle.database), BackupSchedule(database: second)]
        let start = Date()
        for round in 0..<10 {
            let now = start.addingTimeInterval(Double(round) * 3600)
            let claims = try await withThrowingTaskGroup(of: Bool.self) { group in
                for (index, schedule) in schedules.enumerated() {
                    for attempt in 0..<2 {
                        group.addTask {
                            try await schedule.claim(holder: "i\(index)-\(attempt)", interval: .seconds(3600), now: now)
                        }
                    }
                }
                return try await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(claims == 1, "round \(round)")
        }
        await second.shutdown()
    }

    @Test("serve takes scheduled backups: audited, pruned to KEEP, each one verifies, /metrics shows the last")
    func scheduledBackups() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let keyFile = try makeBackupKeyFile(in: directory.path)
        let folder = directory.path + "/backups"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try await APIHarness.with(
            .sqlite,
            configure: { configuration in
                configuration.scheduledBackups = ScheduledBackups(
                    directory: folder, interval: .seconds(1), keep: 2, keyFile: keyFile)
            }
        ) { api in
            // A backup is audited when written and the oldest pruned just after: wait for three audited backups
            // and a folder pruned back to KEEP.
            let deadline = ContinuousClock.now + .seconds(30)
            var taken = 0
            var files: [String] = []
            while ContinuousClock.now < deadline {
                taken = try await api.runtime.database.withConnection { sql in
                    try await sql.raw(
                        "SELECT COUNT(*) AS n FROM audit_events WHERE action = 'backup.create' AND outcome = 'success'"
                    )
                    .first()?.decode(column: "n", as: Int.self) ?? 0
                }
                files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".khbackup") }
                if taken >= 3 && files.count == 2 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(taken >= 3)
            #expect(files.count == 2, "\(files)")
            for file in files {
                let verification = try KeyhavenOperations.verifyBackup(
                    path: folder + "/" + file, secret: try .keyFile(keyFile))
                #expect(!verification.header.includesKeyring)
            }
            let metrics = try await api.metrics().text
            let size = metrics.split(separator: "\n").first { $0.hasPrefix("keyhaven_backup_last_size_bytes ") }
            #expect((size?.split(separator: " ").last.flatMap { Double($0) } ?? 0) > 1000, "\(metrics)")
            #expect(metrics.contains("keyhaven_backup_last_success_timestamp_seconds "))
            guard case .intact = try await api.runtime.audit.verify() else {
                Issue.record("the audit chain does not verify")
                return
            }
        }
    }
}

/// A flag one task sets and another polls.
final class ManagedFlag: Sendable {
    private let value = Mutex((set: false, count: 0))
    var isSet: Bool { value.withLock { $0.set } }
    /// How many writes the writer has started.
    var written: Int { value.withLock { $0.count } }
    func set() { value.withLock { $0.set = true } }
    func count(_ count: Int) { value.withLock { $0.count = count } }
}

/// How many master keys the database knows.
func masterKeyCount(_ database: Database) async throws -> Int {
    try await database.withConnection { sql in
        try await sql.raw("SELECT COUNT(*) AS n FROM keyring_keys").first()?.decode(column: "n", as: Int.self) ?? 0
    }
}
