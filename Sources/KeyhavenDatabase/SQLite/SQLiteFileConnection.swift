import Foundation
import KeyhavenCore
import KeyhavenSQLite
import Logging
import NIOCore
import NIOPosix
import SQLKit
import SQLiteKit

/// One SQLite connection, called directly and synchronously through SQLite's C API.
///
/// Statements are prepared once per connection and kept (up to ``cacheLimit``), values are bound and read without
/// an `Encoder` or `Decoder` for the types the stores use, and nothing hops threads: the caller's thread runs the
/// query. A connection is used by one task at a time (``SQLiteConnections`` hands it out), never concurrently.
final class SQLiteFileConnection: @unchecked Sendable {
    enum Role {
        /// Opened `query_only`: a write fails at once instead of waiting for the write lock.
        case reader
        /// The one connection that writes. Its commits are counted (``walCounts``), and SQLite's automatic
        /// checkpoint is off on it: ``SQLiteConnections`` checkpoints on a connection of its own, outside commits.
        case writer
        /// The connection that checkpoints the log (``checkpoint()``), on a thread of its own.
        case checkpointer
    }

    /// How many prepared statements a connection keeps; statements with long `IN (…)` lists vary, so the cache is
    /// bounded and emptied when full.
    static let cacheLimit = 128

    private let handle: OpaquePointer
    /// The writer's log counts, filled by SQLite's hook during each commit.
    private let wal: UnsafeMutablePointer<keyhaven_wal_counts>?
    private var statements: [String: Statement] = [:]

    /// A prepared statement and the names of its result columns.
    private struct Statement {
        let pointer: OpaquePointer
        let columns: SQLiteColumns
    }

    /// Opens `path` with the settings Keyhaven relies on: WAL, a busy timeout, foreign keys, and for the writer full
    /// sync and `secure_delete`, so destroyed secrets are overwritten in the file.
    init(path: String, role: Role) throws {
        var opened: OpaquePointer?
        let flags = KEYHAVEN_SQLITE_OPEN_READWRITE | KEYHAVEN_SQLITE_OPEN_CREATE | KEYHAVEN_SQLITE_OPEN_NOMUTEX
        let status = sqlite_nio_sqlite3_open_v2(path, &opened, Int32(flags), nil)
        guard let opened else { throw SQLiteFailure(code: status, message: "cannot open the database file") }
        handle = opened
        guard status == KEYHAVEN_SQLITE_OK else {
            let failure = SQLiteFailure(handle: handle, code: status)
            sqlite_nio_sqlite3_close_v2(handle)
            throw failure
        }
        if role == .writer {
            let wal = UnsafeMutablePointer<keyhaven_wal_counts>.allocate(capacity: 1)
            wal.initialize(to: keyhaven_wal_counts())
            keyhaven_sqlite_watch_wal(handle, wal)
            self.wal = wal
        } else {
            wal = nil
        }
        let pragmas =
            switch role {
            case .writer:
                [
                    "PRAGMA busy_timeout = 10000", "PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL",
                    "PRAGMA foreign_keys = ON", "PRAGMA secure_delete = ON",
                    // Savepoints' and statements' journals stay in memory, never in temporary files.
                    "PRAGMA temp_store = MEMORY",
                ]
            case .reader:
                ["PRAGMA busy_timeout = 10000", "PRAGMA foreign_keys = ON", "PRAGMA query_only = ON"]
            case .checkpointer:
                ["PRAGMA busy_timeout = 10000", "PRAGMA synchronous = FULL"]
            }
        do {
            // Plans never depend on bound values, so a cached statement is never prepared again on a new bind.
            try check(keyhaven_sqlite_enable_qpsg(handle))
            try check(keyhaven_sqlite_add_functions(handle))
            for pragma in pragmas { try execute(pragma, binds: []) { _ in } }
        } catch {
            close()
            throw error
        }
    }

    /// The cached statements SQLite prepared again (after a schema change, or a bind that could change the plan),
    /// with how many times. Call it only while no query runs on this connection.
    var reprepared: [String: Int] {
        statements.compactMapValues { statement in
            let count = Int(keyhaven_sqlite_reprepares(statement.pointer))
            return count > 0 ? count : nil
        }
    }

    /// Finalizes every statement and closes the connection.
    func close() {
        for statement in statements.values { sqlite_nio_sqlite3_finalize(statement.pointer) }
        statements.removeAll()
        sqlite_nio_sqlite3_close_v2(handle)
        wal?.deallocate()
    }

    /// The writer's commits, the frames they appended to the log, and the frames in the log now; zeros on other
    /// connections. Read it on the thread that commits.
    var walCounts: keyhaven_wal_counts { wal?.pointee ?? keyhaven_wal_counts() }

    /// Copies what it can of the log into the database file without waiting for anyone (a passive checkpoint).
    ///
    /// - Throws: ``SQLiteFailure`` if SQLite fails it.
    func checkpoint() throws {
        var log: Int32 = 0
        var copied: Int32 = 0
        // SQLITE_CHECKPOINT_PASSIVE
        try check(sqlite_nio_sqlite3_wal_checkpoint_v2(handle, nil, 0, &log, &copied))
    }

    /// Runs `sql` with `binds`, calling `onRow` for each result row.
    ///
    /// - Throws: ``SQLiteFailure`` with SQLite's message (which may quote SQL, never bound values).
    func execute(_ sql: String, binds: [any Encodable & Sendable], _ onRow: (SQLiteResultRow) throws -> Void) throws {
        let statement = try prepared(sql)
        defer {
            sqlite_nio_sqlite3_reset(statement.pointer)
            sqlite_nio_sqlite3_clear_bindings(statement.pointer)
        }
        let expected = Int(sqlite_nio_sqlite3_bind_parameter_count(statement.pointer))
        guard expected == binds.count else {
            throw SQLiteFailure(code: 25, message: "the query has \(expected) parameters but \(binds.count) values")
        }
        for (offset, value) in binds.enumerated() {
            try check(bind(value, at: Int32(offset + 1), to: statement.pointer))
        }
        while true {
            let status = sqlite_nio_sqlite3_step(statement.pointer)
            switch status {
            case Int32(KEYHAVEN_SQLITE_ROW):
                try onRow(SQLiteResultRow(columns: statement.columns, values: values(of: statement)))
            case Int32(KEYHAVEN_SQLITE_DONE):
                return
            default:
                throw SQLiteFailure(handle: handle, code: status)
            }
        }
    }

    private func prepared(_ sql: String) throws -> Statement {
        if let statement = statements[sql] { return statement }
        var pointer: OpaquePointer?
        let status = sqlite_nio_sqlite3_prepare_v3(
            handle, sql, -1, UInt32(KEYHAVEN_SQLITE_PREPARE_PERSISTENT), &pointer, nil)
        guard status == KEYHAVEN_SQLITE_OK else { throw SQLiteFailure(handle: handle, code: status) }
        guard let pointer else { throw SQLiteFailure(code: 21, message: "the query is empty") }
        let count = sqlite_nio_sqlite3_column_count(pointer)
        let names = (0..<count).map { sqlite_nio_sqlite3_column_name(pointer, $0).map { String(cString: $0) } ?? "" }
        let statement = Statement(pointer: pointer, columns: SQLiteColumns(names))
        if statements.count >= Self.cacheLimit {
            for cached in statements.values { sqlite_nio_sqlite3_finalize(cached.pointer) }
            statements.removeAll(keepingCapacity: true)
        }
        statements[sql] = statement
        return statement
    }

    private func values(of statement: Statement) throws -> [SQLiteData] {
        let pointer = statement.pointer
        return try (0..<Int32(statement.columns.names.count)).map { column -> SQLiteData in
            switch sqlite_nio_sqlite3_column_type(pointer, column) {
            case Int32(KEYHAVEN_SQLITE_INTEGER):
                return .integer(Int(sqlite_nio_sqlite3_column_int64(pointer, column)))
            case Int32(KEYHAVEN_SQLITE_FLOAT):
                return .float(sqlite_nio_sqlite3_column_double(pointer, column))
            case Int32(KEYHAVEN_SQLITE_TEXT):
                guard let text = sqlite_nio_sqlite3_column_text(pointer, column) else {
                    throw SQLiteFailure(handle: handle, code: 7)
                }
                let count = Int(sqlite_nio_sqlite3_column_bytes(pointer, column))
                return .text(String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self))
            case Int32(KEYHAVEN_SQLITE_BLOB):
                let count = Int(sqlite_nio_sqlite3_column_bytes(pointer, column))
                var buffer = ByteBufferAllocator().buffer(capacity: count)
                if let bytes = sqlite_nio_sqlite3_column_blob(pointer, column) {
                    buffer.writeBytes(UnsafeRawBufferPointer(start: bytes, count: count))
                }
                return .blob(buffer)
            default:
                return .null
            }
        }
    }

    /// Binds the types the stores use directly, and anything else as sqlite-kit's encoder would.
    private func bind(_ value: any Encodable & Sendable, at index: Int32, to statement: OpaquePointer) throws -> Int32 {
        switch value {
        case let bindable as any SQLiteBindable: return bindable.bind(at: index, to: statement)
        default: return try Self.encoder.encode(value).bind(at: index, to: statement)
        }
    }

    /// sqlite-kit's encoder, for the types without a direct binding.
    private static let encoder = SQLiteDataEncoder()

    private func check(_ status: Int32) throws {
        guard status == KEYHAVEN_SQLITE_OK else { throw SQLiteFailure(handle: handle, code: status) }
    }
}

/// A failed SQLite call: its result code and message. Logged by ``Database``, never shown to a caller.
struct SQLiteFailure: Error, CustomStringConvertible {
    let code: Int32
    let message: String

    init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }

    init(handle: OpaquePointer, code: Int32) {
        self.code = sqlite_nio_sqlite3_extended_errcode(handle)
        message = sqlite_nio_sqlite3_errmsg(handle).map { String(cString: $0) } ?? "SQLite error \(code)"
    }

    static func missingColumn(_ name: String) -> SQLiteFailure { SQLiteFailure(code: 1, message: "no column \(name)") }

    var description: String { "SQLite error \(code): \(message)" }
}
