import Crypto
import Foundation
import KeyhavenCore
import KeyhavenCrypto

/// Why a backup could not be written, read or restored. Every message is one line, names the problem, and never
/// holds a passphrase, a key or a credential.
public enum BackupError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file does not start like a Keyhaven backup.
    case notABackup
    /// The file's format version is not one this build reads.
    case unknownVersion(Int)
    /// The header cannot be parsed, asks for unacceptable parameters, or fails its MAC.
    case damagedHeader(String)
    /// The passphrase or key does not open this backup.
    case wrongKey
    /// The backup was made with the other kind of secret (a passphrase rather than a key file, or the reverse).
    case wrongKindOfSecret(needsPassphrase: Bool)
    /// A chunk does not authenticate: a byte of it (or of its tag) was changed.
    case tampered(chunk: Int)
    /// A chunk authenticates, but in another position: the chunks were reordered.
    case reordered(chunk: Int, holds: Int)
    /// The file ends before its final chunk.
    case truncated(afterChunks: Int)
    /// There are bytes after the final chunk.
    case trailingData
    /// The decrypted contents do not follow the format (only a holder of the key could write such a file).
    case malformed(String)
    /// A table holds another number of rows than the header says.
    case countMismatch(table: String, header: Int64, found: Int64)
    /// The passphrase or key file is unusable.
    case badSecret(String)
    /// The file could not be read or written.
    case io(String)

    public var description: String {
        switch self {
        case .notABackup:
            "the file is not a Keyhaven backup"
        case .unknownVersion(let version):
            "unknown backup format version \(version) (this Keyhaven reads version \(BackupFormat.version))"
        case .damagedHeader(let reason):
            "the backup's header is damaged or was altered: \(reason)"
        case .wrongKey:
            "wrong passphrase or key for this backup"
        case .wrongKindOfSecret(let needsPassphrase):
            needsPassphrase
                ? "this backup was made with a passphrase: give --passphrase-file"
                : "this backup was made with a key file: give --key-file"
        case .tampered(let chunk):
            "the backup was tampered with at chunk \(chunk): it does not authenticate"
        case .reordered(let chunk, let holds):
            "the backup's chunks were reordered: chunk \(chunk) holds chunk \(holds)"
        case .truncated(let chunks):
            "the backup is truncated: it ends after \(chunks) chunks, without its final chunk"
        case .trailingData:
            "the backup has data after its final chunk"
        case .malformed(let reason):
            "the backup's contents are malformed: \(reason)"
        case .countMismatch(let table, let header, let found):
            "the backup's table \(table) holds \(found) rows but its header says \(header)"
        case .badSecret(let reason), .io(let reason):
            reason
        }
    }
}

/// The constants of the backup file format (docs/backup-format.md).
public enum BackupFormat {
    /// The first eight bytes of every backup.
    static let magic: [UInt8] = Array("KHBACKUP".utf8)
    /// The format version this build writes and reads.
    public static let version = 1
    /// Plaintext bytes per chunk, unless told otherwise.
    public static let defaultChunkSize = 1 << 20
    /// The chunk sizes a file may declare.
    static let chunkSizes = 1024...(8 << 20)
    /// The longest header accepted.
    static let maximumHeaderLength = 1 << 16
    /// The longest record accepted (a row, a table description, the keyring).
    static let maximumRecordLength = 64 << 20
    /// The longest single text or byte value accepted.
    static let maximumValueLength = 32 << 20
    /// The most tables a file may list.
    static let maximumTables = 256
    /// The most columns a table may have.
    static let maximumColumns = 256
}

/// The header: what the backup holds, readable without the key but authenticated by it.
public struct BackupHeader: Sendable, Equatable, Codable {
    /// One table and how many rows of it the backup holds.
    public struct Table: Sendable, Equatable, Codable {
        /// The table's name.
        public var name: String
        /// Its row count in the snapshot.
        public var rows: Int64

        /// Creates an entry.
        public init(name: String, rows: Int64) {
            self.name = name
            self.rows = rows
        }
    }

    /// Always `keyhaven-backup`.
    public var format = "keyhaven-backup"
    /// When the snapshot was taken (ISO 8601).
    public var createdAt: String
    /// The kind of database it was taken from: `sqlite` or `postgres`.
    public var source: String
    /// The schema version (the newest migration) of the source database.
    public var schemaVersion: Int
    /// How the key was derived.
    public var kdf: BackupKDF
    /// The file's random salt (base64 of 32 bytes), for the KDF and HKDF.
    public var salt: String
    /// Plaintext bytes per chunk.
    public var chunkSize: Int
    /// Whether the master keys are inside.
    public var includesKeyring: Bool
    /// Every table in the order it appears, with its row count.
    public var tables: [Table]

    /// Creates a header; the writer fills in the KDF and the salt.
    public init(
        createdAt: Date = Date(), source: String, schemaVersion: Int, includesKeyring: Bool, tables: [Table],
        chunkSize: Int = BackupFormat.defaultChunkSize
    ) {
        self.createdAt = createdAt.formatted(.iso8601)
        self.source = source
        self.schemaVersion = schemaVersion
        self.kdf = .none
        self.salt = ""
        self.chunkSize = chunkSize
        self.includesKeyring = includesKeyring
        self.tables = tables
    }

    enum CodingKeys: String, CodingKey {
        case format
        case createdAt = "created_at"
        case source
        case schemaVersion = "schema_version"
        case kdf, salt
        case chunkSize = "chunk_size"
        case includesKeyring = "includes_keyring"
        case tables
    }

    /// The total number of rows.
    public var totalRows: Int64 { tables.reduce(0) { $0 &+ $1.rows } }

    func validated() throws -> (salt: Data, header: BackupHeader) {
        guard format == "keyhaven-backup" else { throw BackupError.damagedHeader("it names another format") }
        guard kdf.isAcceptable else {
            throw BackupError.damagedHeader("its key-derivation parameters are out of bounds")
        }
        guard let salt = Data(base64Encoded: salt), salt.count == 32 else {
            throw BackupError.damagedHeader("its salt is not 32 bytes")
        }
        guard BackupFormat.chunkSizes.contains(chunkSize) else {
            throw BackupError.damagedHeader("its chunk size is out of bounds")
        }
        guard tables.count <= BackupFormat.maximumTables, tables.allSatisfy({ $0.rows >= 0 }),
            Set(tables.map(\.name)).count == tables.count
        else {
            throw BackupError.damagedHeader("its table list is not valid")
        }
        return (salt, self)
    }
}

/// The type of a column's values.
public enum BackupValueType: UInt8, Sendable, CaseIterable {
    case int = 1
    case double = 2
    case text = 3
    case bytes = 4
    case bool = 5
    case uuid = 6
    case date = 7
}

/// One column of a table in the backup.
public struct BackupColumn: Sendable, Equatable {
    /// The column's name.
    public var name: String
    /// The type of its values (any column may also hold null).
    public var type: BackupValueType

    /// Creates a column.
    public init(_ name: String, _ type: BackupValueType) {
        self.name = name
        self.type = type
    }
}

/// One value of a row. Dates are kept exactly (the bits of their `timeIntervalSinceReferenceDate`).
public enum BackupValue: Sendable, Equatable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case bytes(Data)
    case bool(Bool)
    case uuid(UUID)
    case date(Date)

    /// The type of the value; nil for null.
    public var type: BackupValueType? {
        switch self {
        case .null: nil
        case .int: .int
        case .double: .double
        case .text: .text
        case .bytes: .bytes
        case .bool: .bool
        case .uuid: .uuid
        case .date: .date
        }
    }
}

/// One record of a backup's decrypted stream.
public enum BackupRecord: Sendable {
    /// The start of a table: its name and columns. Its rows follow.
    case table(name: String, columns: [BackupColumn])
    /// One row of the current table, a value per column.
    case row([BackupValue])
    /// The end of the current table, with its row count.
    case tableEnd(rows: Int64)
    /// The master keys (only with `--include-keyring`).
    case keyring(Keyring)
    /// The end of the backup.
    case end

    enum Kind: UInt8 {
        case table = 1
        case row = 2
        case tableEnd = 3
        case keyring = 4
        case end = 5
    }
}

// MARK: Encoding

/// Appends the binary forms of records to a buffer (big-endian integers, length-prefixed strings).
struct RecordEncoder {
    var buffer = Data()

    mutating func append(_ record: BackupRecord) {
        switch record {
        case .table(let name, let columns):
            withRecord(.table) { body in
                body.string16(name)
                body.uint16(UInt16(clamping: columns.count))
                for column in columns {
                    body.string16(column.name)
                    body.buffer.append(column.type.rawValue)
                }
            }
        case .row(let values):
            withRecord(.row) { body in
                for value in values { body.value(value) }
            }
        case .tableEnd(let rows):
            withRecord(.tableEnd) { body in body.uint64(UInt64(bitPattern: rows)) }
        case .keyring(let keyring):
            withRecord(.keyring) { body in
                body.uint16(UInt16(clamping: keyring.keys.count))
                for key in keyring.keys {
                    body.string16(key.id)
                    key.key.withUnsafeBytes { body.buffer.append(contentsOf: $0) }
                }
            }
        case .end:
            withRecord(.end) { _ in }
        }
    }

    /// Writes kind, a length placeholder, the body, then the body's length into the placeholder.
    private mutating func withRecord(_ kind: BackupRecord.Kind, _ body: (inout RecordEncoder) -> Void) {
        buffer.append(kind.rawValue)
        let lengthAt = buffer.count
        buffer.append(contentsOf: [0, 0, 0, 0])
        body(&self)
        let length = UInt32(clamping: buffer.count - lengthAt - 4)
        let at = buffer.startIndex + lengthAt
        buffer[at] = UInt8(length >> 24)
        buffer[at + 1] = UInt8((length >> 16) & 0xFF)
        buffer[at + 2] = UInt8((length >> 8) & 0xFF)
        buffer[at + 3] = UInt8(length & 0xFF)
    }

    mutating func value(_ value: BackupValue) {
        switch value {
        case .null:
            buffer.append(0)
        case .int(let number):
            buffer.append(BackupValueType.int.rawValue)
            uint64(UInt64(bitPattern: number))
        case .double(let number):
            buffer.append(BackupValueType.double.rawValue)
            uint64(number.bitPattern)
        case .text(let text):
            buffer.append(BackupValueType.text.rawValue)
            var text = text
            text.withUTF8 { utf8 in
                uint32(UInt32(clamping: utf8.count))
                buffer.append(contentsOf: utf8)
            }
        case .bytes(let data):
            buffer.append(BackupValueType.bytes.rawValue)
            uint32(UInt32(clamping: data.count))
            buffer.append(data)
        case .bool(let flag):
            buffer.append(BackupValueType.bool.rawValue)
            buffer.append(flag ? 1 : 0)
        case .uuid(let id):
            buffer.append(BackupValueType.uuid.rawValue)
            withUnsafeBytes(of: id.uuid) { buffer.append(contentsOf: $0) }
        case .date(let date):
            buffer.append(BackupValueType.date.rawValue)
            uint64(date.timeIntervalSinceReferenceDate.bitPattern)
        }
    }

    mutating func uint16(_ value: UInt16) {
        buffer.append(UInt8(value >> 8))
        buffer.append(UInt8(value & 0xFF))
    }

    mutating func uint32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { buffer.append(UInt8((value >> UInt32(shift)) & 0xFF)) }
    }

    mutating func uint64(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { buffer.append(UInt8((value >> UInt64(shift)) & 0xFF)) }
    }

    mutating func string16(_ text: String) {
        let utf8 = Array(text.utf8.prefix(Int(UInt16.max)))
        uint16(UInt16(utf8.count))
        buffer.append(contentsOf: utf8)
    }
}

// MARK: Decoding

/// Reads big-endian values from a byte slice, throwing instead of reading past its end.
struct ByteCursor {
    let bytes: [UInt8]
    var offset: Int
    let end: Int

    init(_ bytes: [UInt8], from start: Int = 0, to end: Int? = nil) {
        self.bytes = bytes
        self.offset = start
        self.end = min(end ?? bytes.count, bytes.count)
    }

    var remaining: Int { end - offset }

    mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else { throw BackupError.malformed("a record ends early") }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    mutating func uint8() throws -> UInt8 { try take(1).first ?? 0 }

    mutating func uint16() throws -> UInt16 {
        try take(2).reduce(0) { $0 << 8 | UInt16($1) }
    }

    mutating func uint32() throws -> UInt32 {
        try take(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func uint64() throws -> UInt64 {
        try take(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func string16() throws -> String {
        let length = Int(try uint16())
        guard let text = String(validating: try take(length), as: UTF8.self) else {
            throw BackupError.malformed("a name is not UTF-8")
        }
        return text
    }

    mutating func value() throws -> BackupValue {
        let tag = try uint8()
        if tag == 0 { return .null }
        guard let type = BackupValueType(rawValue: tag) else {
            throw BackupError.malformed("unknown value type \(tag)")
        }
        switch type {
        case .int:
            return .int(Int64(bitPattern: try uint64()))
        case .double:
            return .double(Double(bitPattern: try uint64()))
        case .text:
            let length = Int(try uint32())
            guard length <= BackupFormat.maximumValueLength else { throw BackupError.malformed("a value is too long") }
            guard let text = String(validating: try take(length), as: UTF8.self) else {
                throw BackupError.malformed("a text value is not UTF-8")
            }
            return .text(text)
        case .bytes:
            let length = Int(try uint32())
            guard length <= BackupFormat.maximumValueLength else { throw BackupError.malformed("a value is too long") }
            return .bytes(Data(try take(length)))
        case .bool:
            switch try uint8() {
            case 0: return .bool(false)
            case 1: return .bool(true)
            default: throw BackupError.malformed("a boolean is neither 0 nor 1")
            }
        case .uuid:
            let b = Array(try take(16))
            return .uuid(
                UUID(
                    uuid: (
                        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                        b[15]
                    )))
        case .date:
            let seconds = Double(bitPattern: try uint64())
            guard seconds.isFinite else { throw BackupError.malformed("a date is not finite") }
            return .date(Date(timeIntervalSinceReferenceDate: seconds))
        }
    }
}

// MARK: Chunks

/// The nonce of chunk `index`: the index as 8 big-endian bytes, three zero bytes, then 1 for the final chunk and
/// 0 otherwise. Each file has its own key, so a nonce never repeats under a key.
func chunkNonce(index: UInt64, final: Bool) throws -> AES.GCM.Nonce {
    var bytes = [UInt8](repeating: 0, count: 12)
    for position in 0..<8 { bytes[position] = UInt8((index >> UInt64(56 - 8 * position)) & 0xFF) }
    bytes[11] = final ? 1 : 0
    return try AES.GCM.Nonce(data: bytes)
}

/// The associated data of every chunk: the header's MAC, binding each chunk to this header and this file.
func chunkAssociatedData(headerTag: Data) -> Data {
    var data = Data("keyhaven:backup:v1:chunk|".utf8)
    data.append(headerTag)
    return data
}

/// What the key check in the preamble MACs: it tells a wrong key from a damaged header.
let keyCheckText = Data("keyhaven:backup:v1:key-check".utf8)

func keyCheck(_ keys: BackupKeys) -> Data {
    Data(HMAC<SHA256>.authenticationCode(for: keyCheckText, using: keys.mac))
}
