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
        /// The one connection that writes.
        case writer
    }

    /// How many prepared statements a connection keeps; statements with long `IN (…)` lists vary, so the cache is
    /// bounded and emptied when full.
    static let cacheLimit = 128

    private let handle: OpaquePointer
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

/// A value bound straight to a statement parameter, the way sqlite-kit's `SQLiteDataEncoder` stores it (so rows
/// written before and after read the same): text, integers, doubles (dates as seconds since 1970) and blobs.
protocol SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32
}

extension String: SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32 {
        var text = self
        return text.withUTF8 { keyhaven_sqlite_bind_text(statement, index, $0.baseAddress, UInt64($0.count)) }
    }
}

extension UUID: SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32 { uppercasedText.bind(at: index, to: statement) }
}

extension Date: SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32 {
        sqlite_nio_sqlite3_bind_double(statement, index, timeIntervalSince1970)
    }
}

extension Double: SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32 {
        sqlite_nio_sqlite3_bind_double(statement, index, self)
    }
}

extension Bool: SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32 {
        sqlite_nio_sqlite3_bind_int64(statement, index, self ? 1 : 0)
    }
}

extension Int: SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32 {
        sqlite_nio_sqlite3_bind_int64(statement, index, Int64(self))
    }
}

extension Int64: SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32 {
        sqlite_nio_sqlite3_bind_int64(statement, index, self)
    }
}

extension Data: SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32 {
        withUnsafeBytes { keyhaven_sqlite_bind_blob(statement, index, $0.baseAddress, UInt64($0.count)) }
    }
}

extension Optional: SQLiteBindable where Wrapped: SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32 {
        switch self {
        case .some(let value): value.bind(at: index, to: statement)
        case .none: sqlite_nio_sqlite3_bind_null(statement, index)
        }
    }
}

extension SQLiteData: SQLiteBindable {
    func bind(at index: Int32, to statement: OpaquePointer) -> Int32 {
        switch self {
        case .integer(let value): sqlite_nio_sqlite3_bind_int64(statement, index, Int64(value))
        case .float(let value): sqlite_nio_sqlite3_bind_double(statement, index, value)
        case .text(let value): value.bind(at: index, to: statement)
        case .blob(let value):
            value.withUnsafeReadableBytes { keyhaven_sqlite_bind_blob(statement, index, $0.baseAddress, UInt64($0.count)) }
        case .null: sqlite_nio_sqlite3_bind_null(statement, index)
        }
    }
}

/// The result column names of one statement, with their positions, shared by every row it returns.
final class SQLiteColumns: Sendable {
    let names: [String]
    private let positions: [String: Int]

    init(_ names: [String]) {
        self.names = names
        // With a repeated name, the first column wins, as in sqlite-nio.
        positions = Dictionary(names.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
    }

    func position(of name: String) -> Int? { positions[name] }
}

/// One result row. Columns decode as sqlite-kit's `SQLiteDataDecoder` decodes them; the common types skip its
/// `Decoder` machinery.
struct SQLiteResultRow: SQLRow {
    let columns: SQLiteColumns
    let values: [SQLiteData]

    var allColumns: [String] { columns.names }

    func contains(column: String) -> Bool { columns.position(of: column) != nil }

    func decodeNil(column: String) throws -> Bool {
        guard let position = columns.position(of: column) else { return true }
        return values[position] == .null
    }

    func decode<D: Decodable>(column: String, as type: D.Type) throws -> D {
        guard let position = columns.position(of: column) else { throw SQLiteFailure.missingColumn(column) }
        let value = values[position]
        // The stores' column types, recognised by identity against ids taken once: no conformance lookup, cast or
        // generic metadata lookup per column.
        switch ObjectIdentifier(D.self) {
        case Known.string: return try Self.cast(String(column: value), column)
        case Known.uuid: return try Self.cast(UUID(column: value), column)
        case Known.date: return try Self.cast(Date(column: value), column)
        case Known.optionalString: return try Self.cast(String?(column: value), column)
        case Known.optionalDate: return try Self.cast(Date?(column: value), column)
        case Known.int: return try Self.cast(Int(column: value), column)
        case Known.bool: return try Self.cast(Bool(column: value), column)
        case Known.optionalUUID: return try Self.cast(UUID?(column: value), column)
        case Known.int64: return try Self.cast(Int64(column: value), column)
        case Known.data: return try Self.cast(Data(column: value), column)
        default: return try Self.decodeOther(value, as: D.self, column)
        }
    }

    /// Any other type, as sqlite-kit's decoder decodes it. Kept apart so `decode` itself needs no metadata for
    /// `D?`, which the runtime would otherwise look up on every call.
    @inline(never)
    private static func decodeOther<D: Decodable>(_ value: SQLiteData, as type: D.Type, _ column: String) throws -> D {
        if let decodable = D.self as? any SQLiteColumnDecodable.Type {
            guard let decoded = decodable.init(column: value) else { throw mismatch(D.self, column) }
            // `decodable` is `D.self`, so this cast cannot fail.
            if let decoded = decoded as? D { return decoded }
        }
        return try decoder.decode(D.self, from: value)
    }

    /// The types decoded directly, by identity.
    private enum Known {
        static let string = ObjectIdentifier(String.self)
        static let uuid = ObjectIdentifier(UUID.self)
        static let date = ObjectIdentifier(Date.self)
        static let optionalString = ObjectIdentifier(String?.self)
        static let optionalDate = ObjectIdentifier(Date?.self)
        static let int = ObjectIdentifier(Int.self)
        static let bool = ObjectIdentifier(Bool.self)
        static let optionalUUID = ObjectIdentifier(UUID?.self)
        static let int64 = ObjectIdentifier(Int64.self)
        static let data = ObjectIdentifier(Data.self)
    }

    /// A converted value as `D`, which the caller has checked is its type; a failed conversion is a type mismatch.
    @inline(__always)
    private static func cast<Value, D>(_ value: Value?, _ column: String) throws -> D {
        guard let value else { throw mismatch(D.self, column) }
        return unsafeBitCast(value, to: D.self)
    }

    private static func mismatch(_ type: Any.Type, _ column: String) -> DecodingError {
        .typeMismatch(type, .init(codingPath: [], debugDescription: "Could not convert column \(column) to \(type)."))
    }

    /// sqlite-kit's decoder, for the types without a direct conversion.
    private static let decoder = SQLiteDataDecoder()
}

/// Types read from a column without a `Decoder`, with the same result sqlite-kit's decoder gives.
protocol SQLiteColumnDecodable {
    init?(column: SQLiteData)
}

/// sqlite-nio's own conversions: what sqlite-kit's decoder calls for these types.
extension SQLiteColumnDecodable where Self: SQLiteDataConvertible {
    init?(column: SQLiteData) { self.init(sqliteData: column) }
}

extension String: SQLiteColumnDecodable {}
extension Date: SQLiteColumnDecodable {}
extension Double: SQLiteColumnDecodable {}
extension Bool: SQLiteColumnDecodable {}
extension Int: SQLiteColumnDecodable {}
extension Int64: SQLiteColumnDecodable {}
extension Data: SQLiteColumnDecodable {}

extension UUID: SQLiteColumnDecodable {
    /// Stored as its text; sqlite-kit decodes it as a `String`, then parses it.
    init?(column: SQLiteData) {
        guard let text = String(sqliteData: column) else { return nil }
        self.init(text: text)
    }
}

extension Optional: SQLiteColumnDecodable where Wrapped: SQLiteColumnDecodable {
    /// NULL is `nil`; anything else must convert to `Wrapped`.
    init?(column: SQLiteData) {
        if column == .null {
            self = .none
        } else if let value = Wrapped(column: column) {
            self = .some(value)
        } else {
            return nil
        }
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
