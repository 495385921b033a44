// keyhaven-bench: the figures behind ./scripts/bench. Every figure is a ratio or a rate measured side by side in
// this one run on this one machine; nothing here is a pass/fail test.
import Crypto
import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenStorage
import Logging
import SQLKit

struct Row {
    var name: String
    var opsPerSecond: Double
    var note: String = ""
}

var rows: [Row] = []
let arguments = CommandLine.arguments.dropFirst()
let rotationSizes = arguments.first.map { $0.split(separator: ",").compactMap { Int($0) } } ?? [100_000, 1_000_000]
let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })

// The helpers ./scripts/bench runs around `keyhaven serve` for the HTTP figures.
switch arguments.first {
case "hello":
    try await runHelloServer(port: arguments.dropFirst().first.flatMap { Int($0) } ?? 8090)
    exit(0)
case "count-usage":
    // The usage events a bench run left, after its server has exited.
    let options = Array(arguments.dropFirst())
    guard let url = options.first else { exit(1) }
    let database = try await Database.open(try DatabaseLocation(url: url), logger: logger)
    let count = try await database.withConnection { sql in
        try await sql.raw("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM usage_events").first()?.decode(
            column: "n", as: Int.self) ?? 0
    }
    await database.shutdown()
    print(count)
    exit(0)
case "in-process":
    let options = Array(arguments.dropFirst())
    guard options.count == 2 else { exit(1) }
    try await runInProcess(databaseURL: options[0], masterKey: options[1])
    exit(0)
case "floors":
    guard let url = arguments.dropFirst().first else { exit(1) }
    try await runFloors(databaseURL: url)
    exit(0)
case "relay":
    let ports = arguments.dropFirst().compactMap { Int($0) }
    guard ports.count == 2 else { exit(1) }
    try await runRelay(port: ports[0], providerPort: ports[1])
    exit(0)
case "loop-relay":
    let ports = arguments.dropFirst().compactMap { Int($0) }
    guard ports.count == 2 else { exit(1) }
    try runLoopRelay(port: ports[0], providerPort: ports[1])
    exit(0)
case "fake-provider":
    try await runFakeProvider(port: arguments.dropFirst().first.flatMap { Int($0) } ?? 8091)
    exit(0)
case "seed":
    let options = Array(arguments.dropFirst())
    guard options.count == 3, let count = Int(options[2]) else {
        FileHandle.standardError.write(Data("usage: keyhaven-bench seed DATABASE_URL MASTER_KEY INTEGRATIONS\n".utf8))
        exit(1)
    }
    try await seedForHTTP(databaseURL: options[0], masterKey: options[1], integrations: count)
    exit(0)
default:
    break
}

/// Runs `body` repeatedly for about `seconds` after a warm-up and returns operations per second.
func measure(seconds: Double = 2, batch: Int = 1000, _ body: () throws -> Void) rethrows -> Double {
    for _ in 0..<batch { try body() }
    let clock = ContinuousClock()
    let start = clock.now
    var count = 0
    while start.duration(to: clock.now) < .seconds(seconds) {
        for _ in 0..<batch { try body() }
        count += batch
    }
    return Double(count) / start.duration(to: clock.now).seconds
}

func measureAsync(seconds: Double = 3, _ body: () async throws -> Void) async rethrows -> Double {
    for _ in 0..<50 { try await body() }
    let clock = ContinuousClock()
    let start = clock.now
    var count = 0
    while start.duration(to: clock.now) < .seconds(seconds) {
        try await body()
        count += 1
    }
    return Double(count) / start.duration(to: clock.now).seconds
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

// MARK: Crypto: the work a put and a get do, without the database.

let payloads = [
    ("OpenAI key, 51 B", "sk-proj-" + String(repeating: "a1B2", count: 10) + "xyz"),
    (
        "service account, 2.3 KB",
        String(repeating: "{\"private_key\":\"-----BEGIN PRIVATE KEY-----\\nMIIE\"}", count: 46)
    ),
]
let kek = try MasterKey.generate(id: "kek-bench")
let rawKey = SymmetricKey(size: .bits256)
let ids = (UUID(), UUID())
for (label, text) in payloads {
    let secret = SecretBytes(utf8: text)
    let bytes = Data(text.utf8)
    let aad = Data("keyhaven:v1|\(UUID())|\(UUID())|\(UUID())|1".utf8)
    let rawSeal = try measure { _ = try AES.GCM.seal(bytes, using: rawKey, authenticating: aad) }
    let rawBox = try AES.GCM.seal(bytes, using: rawKey, authenticating: aad)
    let rawOpen = try measure { _ = try AES.GCM.open(rawBox, using: rawKey, authenticating: aad) }
    // What a put does besides the database: a new row id, a data key, two nonces, a seal and a wrap.
    let envelopeSeal = try measure {
        _ = try Envelope.sealNewRow(secret, integrationID: ids.0, ownerID: ids.1, version: 1, kek: kek)
    }
    let binding = SecretBinding(secretID: UUID(), integrationID: ids.0, ownerID: ids.1, version: 1)
    let sealed = try Envelope.seal(secret, binding: binding, kek: kek)
    let envelopeOpen = try measure { _ = try Envelope.open(sealed, binding: binding, kek: kek) }
    rows.append(Row(name: "raw AES-256-GCM seal (\(label))", opsPerSecond: rawSeal))
    rows.append(
        Row(
            name: "put crypto: envelope seal (\(label))", opsPerSecond: envelopeSeal,
            note: String(format: "%.2fx the time of a raw seal", rawSeal / envelopeSeal)))
    rows.append(Row(name: "raw AES-256-GCM open (\(label))", opsPerSecond: rawOpen))
    rows.append(
        Row(
            name: "get crypto: envelope open (\(label))", opsPerSecond: envelopeOpen,
            note: String(format: "%.2fx the time of a raw open", rawOpen / envelopeOpen)))
}

// MARK: The secret store with its database.

func freshDatabase(_ location: DatabaseLocation) async throws -> Database {
    let database = try await Database.open(location, logger: logger)
    try await Migrator(database: database).migrate()
    return database
}

func makeOwner(_ database: Database, integrations: Int = 1) async throws -> [SecretOwner] {
    let user = UUID()
    let now = Date()
    return try await database.transaction { sql in
        try await sql.raw(
            "INSERT INTO users (id, email, created_at) VALUES (\(bind: user), \(bind: "\(user)@bench"), \(bind: now))"
        ).run()
        var owners: [SecretOwner] = []
        for index in 0..<integrations {
            let id = UUID()
            try await sql.raw(
                """
                INSERT INTO integrations (id, owner_id, name, type, status, enabled, config, created_at, updated_at)
                VALUES (\(bind: id), \(bind: user), \(bind: "bench \(index)"), 'openai', 'connected', \(bind: true),
                '{}', \(bind: now), \(bind: now))
                """
            ).run()
            owners.append(SecretOwner(integrationID: id, ownerID: user))
        }
        return owners
    }
}

let scratch = FileManager.default.temporaryDirectory.path + "/keyhaven-bench-\(UUID())"
try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: scratch) }

var locations: [(String, DatabaseLocation)] = [("SQLite", .sqlite(path: scratch + "/store.sqlite"))]
if let url = ProcessInfo.processInfo.environment["KEYHAVEN_TEST_POSTGRES_URL"], !url.isEmpty {
    locations.append(("PostgreSQL", .postgres(url: url)))
}

for (name, location) in locations {
    let database = try await freshDatabase(location)
    if case .postgres = location {
        try await database.withConnection { sql in
            try await sql.raw("TRUNCATE secrets, integrations, users, keyring_keys CASCADE").run()
        }
    }
    let source = KeyringSource(environmentKey: kek)
    let keyring = try await LiveKeyring.open(source: source, database: database, allowCreate: false, logger: logger)
    let store = SQLSecretStore(database: database, keyring: keyring, logger: logger)
    let owner = try await makeOwner(database)[0]
    let secret = SecretBytes(utf8: payloads[0].1)
    let put = try await measureAsync { try await store.put(secret, for: owner) }
    let get = try await measureAsync { _ = try await store.get(owner, version: nil) }
    rows.append(Row(name: "SecretStore.put on \(name) (51 B, one transaction each)", opsPerSecond: put))
    rows.append(Row(name: "SecretStore.get on \(name) (51 B)", opsPerSecond: get))
    await database.shutdown()
}

// MARK: Rotation.

/// Fills a fresh database with `count` sealed secrets quickly (multi-row inserts), under a keyring file.
func seedForRotation(_ location: DatabaseLocation, count: Int, keyringPath: String) async throws -> (
    Database, KeyringSource
) {
    let database = try await freshDatabase(location)
    if case .postgres = location {
        try await database.withConnection { sql in
            try await sql.raw("TRUNCATE secrets, integrations, users, keyring_keys CASCADE").run()
        }
    }
    let source = KeyringSource(file: KeyringFile(path: keyringPath))
    let live = try await LiveKeyring.open(source: source, database: database, allowCreate: true, logger: logger)
    let key = live.keyring.keys[0]
    let perIntegration = 1000
    let owners = try await makeOwner(database, integrations: max(1, count / perIntegration))
    let plaintext = SecretBytes(utf8: payloads[0].1)
    var inserted = 0
    let batch = 1000
    while inserted < count {
        let size = min(batch, count - inserted)
        var query = SQLQueryString(
            """
            INSERT INTO secrets (id, integration_id, owner_id, version, \
            kek_id, wrapped_dek, nonce, ciphertext, created_at) VALUES\u{20}
            """
        )
        let now = Date()
        for offset in 0..<size {
            let index = inserted + offset
            let owner = owners[index / perIntegration]
            let (binding, sealed) = try Envelope.sealNewRow(
                plaintext, integrationID: owner.integrationID, ownerID: owner.ownerID,
                version: index % perIntegration + 1,
                kek: key)
            let values: [any Encodable & Sendable] = [
                binding.secretID, binding.integrationID, binding.ownerID, binding.version, sealed.kekID,
                sealed.wrappedDEK,
                sealed.nonce, sealed.ciphertext, now,
            ]
            for (column, value) in values.enumerated() {
                query.appendInterpolation(unsafeRaw: column == 0 ? (offset == 0 ? "(" : ", (") : ", ")
                query.appendInterpolation(bind: value)
            }
            query.appendInterpolation(unsafeRaw: ")")
        }
        let finished = query
        try await database.transaction { sql in try await sql.raw(finished).run() }
        inserted += size
    }
    return (database, source)
}

var rotationLocations = [("SQLite", { (n: Int) in DatabaseLocation.sqlite(path: scratch + "/rotate-\(n).sqlite") })]
if locations.count > 1, case .postgres(let url) = locations[1].1 {
    rotationLocations.append(("PostgreSQL", { _ in DatabaseLocation.postgres(url: url) }))
}
for (name, makeLocation) in rotationLocations {
    for size in rotationSizes {
        if name == "PostgreSQL" && size > 100_000 { continue }
        let (database, source) = try await seedForRotation(
            makeLocation(size), count: size, keyringPath: scratch + "/keyring-\(name)-\(size).json")
        let management = KeyManagement(database: database, source: source, logger: logger)
        let start = ContinuousClock.now
        let result = try await management.rotate(batchSize: 1000)
        let elapsed = start.duration(to: .now).seconds
        precondition(result.rewrapped == size, "rotation re-wrapped \(result.rewrapped) of \(size)")
        let formatted = size.formatted()
        rows.append(
            Row(
                name: "keys rotate, \(formatted) secrets on \(name)", opsPerSecond: Double(size) / elapsed,
                note: String(format: "rows/s; %.1f s in all", elapsed)))
        await database.shutdown()
        if case .sqlite(let path) = makeLocation(size) {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }
    }
}

// MARK: Report.

let cores = ProcessInfo.processInfo.activeProcessorCount
print("Keyhaven benchmark: release build, \(cores) cores, \(Date().formatted(.iso8601))")
print("")
let width = rows.map(\.name.count).max() ?? 0
print("operation".padding(toLength: width, withPad: " ", startingAt: 0) + "        ops/s     µs/op  note")
for row in rows {
    let name = row.name.padding(toLength: width, withPad: " ", startingAt: 0)
    print(name + String(format: " %12.0f %9.2f  ", row.opsPerSecond, 1e6 / row.opsPerSecond) + row.note)
}
