import Foundation
import KeyhavenCore
import KeyhavenDatabase
import KeyhavenStorage
import Logging
import SQLKit

/// A database the storage suites run against: SQLite always, PostgreSQL when `KEYHAVEN_TEST_POSTGRES_URL` is set.
///
/// With `CI=true` and no PostgreSQL URL, the PostgreSQL case is still listed and fails when opened, so a CI run can
/// never pass by silently skipping the PostgreSQL suites.
public enum TestDatabase: String, Sendable, CaseIterable, CustomStringConvertible {
    case sqlite
    case postgres

    /// The databases to run every storage test on.
    public static var all: [TestDatabase] {
        let environment = ProcessInfo.processInfo.environment
        let hasPostgres = !(environment["KEYHAVEN_TEST_POSTGRES_URL"] ?? "").isEmpty
        let isCI = environment["CI"] == "true"
        return hasPostgres || isCI ? [.sqlite, .postgres] : [.sqlite]
    }

    public var description: String { rawValue }

    /// A fresh, empty database of this kind, private to one test; migrated unless `migrated` is false (a test of
    /// a migration applies them itself).
    public func make(logger: Logger = Logger(label: "test"), migrated: Bool = true) async throws -> TestDatabaseHandle {
        switch self {
        case .sqlite:
            let directory = try TemporaryDirectory()
            let location = DatabaseLocation.sqlite(path: directory.path + "/keyhaven.sqlite")
            let database = try await Database.open(location, logger: logger)
            if migrated { try await Migrator(database: database).migrate() }
            return TestDatabaseHandle(database: database, location: location, schema: nil, directory: directory)
        case .postgres:
            guard let url = ProcessInfo.processInfo.environment["KEYHAVEN_TEST_POSTGRES_URL"], !url.isEmpty else {
                throw TestSetupError(
                    "KEYHAVEN_TEST_POSTGRES_URL is not set, and CI=true requires the PostgreSQL suites")
            }
            let location = DatabaseLocation.postgres(url: url)
            let schema = "kh_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
            let admin = try await Database.open(location, logger: logger)
            try await admin.withConnection { sql in try await sql.raw("CREATE SCHEMA \(ident: String(schema))").run() }
            await admin.shutdown()
            let database = try await Database.open(location, searchPath: [String(schema)], logger: logger)
            if migrated { try await Migrator(database: database).migrate() }
            return TestDatabaseHandle(
                database: database, location: location, schema: String(schema), directory: try TemporaryDirectory())
        }
    }
}

/// A database made for one test; ``close()`` drops it.
public struct TestDatabaseHandle: Sendable {
    /// The open pool.
    public let database: Database
    /// Where it is (SQLite file or PostgreSQL URL).
    public let location: DatabaseLocation
    /// The PostgreSQL schema holding its tables, if PostgreSQL.
    public let schema: String?
    /// A private folder for files the test writes (keyring files, the SQLite file).
    public let directory: TemporaryDirectory

    /// Closes the pool and removes the database.
    public func close() async {
        await database.shutdown()
        if let schema, case .postgres = location,
            let admin = try? await Database.open(location, logger: Logger(label: "test"))
        {
            try? await admin.withConnection { sql in try await sql.raw("DROP SCHEMA \(ident: schema) CASCADE").run() }
            await admin.shutdown()
        }
        directory.remove()
    }

    /// Every value stored in every table, as text: for leak scans. Binary columns appear as raw bytes (SQLite
    /// file) or as hex (PostgreSQL), and both forms are searched by ``containsAnywhere(_:)``.
    public func dumpEverything() async throws -> [Data] {
        switch location {
        case .sqlite(let path):
            return [path, path + "-wal", path + "-shm"].compactMap { FileManager.default.contents(atPath: $0) }
        case .postgres:
            let schema = self.schema!
            return try await database.withConnection { sql in
                let tables = try await sql.raw(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = \(bind: schema)"
                ).all().map { try $0.decode(column: "table_name", as: String.self) }
                var dumps: [Data] = []
                for table in tables {
                    let rows = try await sql.raw(
                        "SELECT row_to_json(t)::text AS j FROM \(ident: schema).\(ident: table) t"
                    )
                    .all()
                    for row in rows { dumps.append(Data(try row.decode(column: "j", as: String.self).utf8)) }
                }
                return dumps
            }
        }
    }
}

/// Whether `needle` appears in any of `haystacks` as raw bytes, as lowercase or uppercase hex, or as base64.
public func containsAnywhere(_ needle: Data, in haystacks: [Data]) -> Bool {
    let hex = needle.map { String(format: "%02x", $0) }.joined()
    let forms = [needle, Data(hex.utf8), Data(hex.uppercased().utf8), Data(needle.base64EncodedString().utf8)]
    return haystacks.contains { haystack in forms.contains { haystack.range(of: $0) != nil } }
}

/// A setup problem in a test's environment.
public struct TestSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A private temporary folder.
public struct TemporaryDirectory: Sendable {
    /// Its path.
    public let path: String

    /// Creates a new empty folder under the system's temporary folder.
    public init() throws {
        path = FileManager.default.temporaryDirectory.path + "/keyhaven-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// Removes the folder and everything in it.
    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
