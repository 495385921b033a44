import Foundation
import KeyhavenCore
import KeyhavenSQLite
import NIOCore
import SQLKit
import SQLiteKit

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
            value.withUnsafeReadableBytes {
                keyhaven_sqlite_bind_blob(statement, index, $0.baseAddress, UInt64($0.count))
            }
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
