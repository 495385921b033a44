import Crypto
import Foundation
import KeyhavenCore
import KeyhavenCrypto

/// Writes a backup: the preamble, then the records sealed in AES-256-GCM chunks (docs/backup-format.md).
///
/// Memory stays bounded by one chunk: records are buffered until a chunk is full, sealed, and handed to `sink`.
public final class BackupWriter {
    private let keys: BackupKeys
    private let associatedData: Data
    private let chunkSize: Int
    private let sink: (Data) throws -> Void
    private var encoder = RecordEncoder()
    private var chunkIndex: UInt64 = 0
    private var finished = false
    /// Bytes handed to the sink so far.
    public private(set) var bytesWritten: Int64 = 0

    /// Starts a backup: derives the file's keys (scrypt for a passphrase), and writes the preamble.
    ///
    /// - Parameters:
    ///   - header: what the backup holds; its KDF and salt are filled in here.
    ///   - kdf: the scrypt parameters used with a passphrase.
    ///   - sink: receives the file's bytes in order.
    /// - Throws: `BackupError` if the key cannot be derived, or what `sink` throws.
    public init(
        header: BackupHeader, secret: BackupSecret, kdf: BackupKDF = .standard, sink: @escaping (Data) throws -> Void
    ) throws {
        var header = header
        let salt = Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
        header.salt = salt.base64EncodedString()
        header.kdf = secret.isPassphrase ? kdf : .none
        guard header.kdf.isAcceptable, BackupFormat.chunkSizes.contains(header.chunkSize) else {
            throw BackupError.badSecret("the backup's parameters are out of bounds")
        }
        let derived = try secret.derive(kdf: header.kdf, salt: salt)
        let jsonEncoder = JSONEncoder()
        jsonEncoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json: Data
        do {
            json = try jsonEncoder.encode(header)
        } catch {
            throw BackupError.io("cannot encode the backup header")
        }
        var preamble = Data(BackupFormat.magic)
        var numbers = RecordEncoder()
        numbers.uint16(UInt16(BackupFormat.version))
        numbers.uint32(UInt32(clamping: json.count))
        preamble.append(numbers.buffer)
        preamble.append(json)
        preamble.append(keyCheck(derived))
        let tag = Data(HMAC<SHA256>.authenticationCode(for: preamble, using: derived.mac))
        preamble.append(tag)
        keys = derived
        chunkSize = header.chunkSize
        self.sink = sink
        associatedData = chunkAssociatedData(headerTag: tag)
        try emit(preamble)
    }

    /// Adds a record; a full chunk is sealed and written.
    ///
    /// - Throws: what the sink throws.
    public func append(_ record: BackupRecord) throws {
        encoder.append(record)
        while encoder.buffer.count > chunkSize {
            try seal(Data(encoder.buffer.prefix(chunkSize)), final: false)
            // A copy that starts at index 0 again (removeFirst would only slice).
            encoder.buffer = Data(encoder.buffer.dropFirst(chunkSize))
        }
    }

    /// Writes the end record and the final chunk. Nothing may be appended afterwards.
    ///
    /// - Throws: what the sink throws.
    public func finish() throws {
        guard !finished else { return }
        try append(.end)
        try seal(encoder.buffer, final: true)
        encoder.buffer.resetBytes(in: encoder.buffer.startIndex..<encoder.buffer.endIndex)
        encoder.buffer = Data()
        finished = true
    }

    private func seal(_ plaintext: Data, final: Bool) throws {
        let box: AES.GCM.SealedBox
        do {
            box = try AES.GCM.seal(
                plaintext, using: keys.encryption, nonce: try chunkNonce(index: chunkIndex, final: final),
                authenticating: associatedData)
        } catch {
            throw BackupError.io("cannot encrypt the backup")
        }
        var framed = RecordEncoder()
        framed.uint32(UInt32(clamping: box.ciphertext.count + box.tag.count))
        framed.buffer.append(box.ciphertext)
        framed.buffer.append(box.tag)
        try emit(framed.buffer)
        chunkIndex += 1
    }

    private func emit(_ data: Data) throws {
        try sink(data)
        bytesWritten += Int64(data.count)
    }
}

/// Where a reader's bytes come from.
public protocol BackupByteSource {
    /// Up to `count` bytes; fewer only at the end of the input.
    ///
    /// - Throws: `BackupError.io` if the input cannot be read.
    mutating func read(_ count: Int) throws -> [UInt8]
}

/// Reads and checks a backup: the header and the key first, then every chunk and record in order.
///
/// Everything read is bounded: the header, each chunk, each record and each value have a maximum length, and a
/// file that breaks any rule is refused with a ``BackupError`` rather than trusted.
public final class BackupReader<Source: BackupByteSource> {
    /// The checked header.
    public let header: BackupHeader
    private var source: Source
    private let keys: BackupKeys
    private let associatedData: Data
    private var chunkIndex = 0
    private var sawFinal = false
    private var plaintext: [UInt8] = []
    private var offset = 0
    private var ended = false
    // What the records said so far, checked against each other and the header.
    private var columns: [BackupColumn]?
    private var tableIndex = 0
    private var rowsInTable: Int64 = 0
    private var sawKeyring = false

    /// Reads the preamble and checks the key and the header's MAC, before anything else is read.
    ///
    /// - Throws: `BackupError` naming what is wrong: not a backup, unknown version, damaged header, wrong key.
    public init(source: Source, secret: BackupSecret) throws {
        var source = source
        let magic = try source.read(BackupFormat.magic.count + 6)
        guard magic.count == BackupFormat.magic.count + 6, Array(magic.prefix(8)) == BackupFormat.magic else {
            throw BackupError.notABackup
        }
        var numbers = ByteCursor(magic, from: 8)
        let version = Int(try numbers.uint16())
        guard version == BackupFormat.version else { throw BackupError.unknownVersion(version) }
        let length = Int(try numbers.uint32())
        guard length > 0, length <= BackupFormat.maximumHeaderLength else {
            throw BackupError.damagedHeader("its length is out of bounds")
        }
        let rest = try source.read(length + 64)
        guard rest.count == length + 64 else { throw BackupError.damagedHeader("the file ends inside it") }
        let json = Data(rest.prefix(length))
        let decoded: BackupHeader
        do {
            decoded = try JSONDecoder().decode(BackupHeader.self, from: json)
        } catch {
            throw BackupError.damagedHeader("it is not valid JSON")
        }
        let (salt, header) = try decoded.validated()
        let derived = try secret.derive(kdf: header.kdf, salt: salt)
        let check = Data(rest[length..<(length + 32)])
        guard HMAC<SHA256>.isValidAuthenticationCode(check, authenticating: keyCheckText, using: derived.mac) else {
            throw BackupError.wrongKey
        }
        let tag = Data(rest[(length + 32)..<(length + 64)])
        var covered = Data(magic)
        covered.append(contentsOf: rest.prefix(length + 32))
        guard HMAC<SHA256>.isValidAuthenticationCode(tag, authenticating: covered, using: derived.mac) else {
            throw BackupError.damagedHeader("its MAC does not match")
        }
        self.source = source
        self.keys = derived
        self.header = header
        associatedData = chunkAssociatedData(headerTag: tag)
    }

    /// The next record, checked; nil once the end record and the final chunk have been read and nothing follows.
    ///
    /// - Throws: `BackupError` naming the first problem (tampered, reordered or missing chunks, malformed records,
    ///   row counts that differ from the header).
    public func next() throws -> BackupRecord? {
        if ended { return nil }
        let kindByte = try bytes(1)[0]
        var lengthCursor = ByteCursor(try bytes(4))
        let length = Int(try lengthCursor.uint32())
        guard length <= BackupFormat.maximumRecordLength else { throw BackupError.malformed("a record is too long") }
        guard let kind = BackupRecord.Kind(rawValue: kindByte) else {
            throw BackupError.malformed("unknown record kind \(kindByte)")
        }
        var body = ByteCursor(try bytes(length))
        let record: BackupRecord
        switch kind {
        case .table:
            guard columns == nil else { throw BackupError.malformed("a table starts inside another") }
            let name = try body.string16()
            let count = Int(try body.uint16())
            guard count > 0, count <= BackupFormat.maximumColumns else {
                throw BackupError.malformed("table \(name) has \(count) columns")
            }
            var list: [BackupColumn] = []
            for _ in 0..<count {
                let column = try body.string16()
                guard let type = BackupValueType(rawValue: try body.uint8()) else {
                    throw BackupError.malformed("a column of \(name) has an unknown type")
                }
                list.append(BackupColumn(column, type))
            }
            guard tableIndex < header.tables.count, header.tables[tableIndex].name == name else {
                throw BackupError.malformed("table \(name) is not the one the header lists next")
            }
            guard Set(list.map(\.name)).count == list.count else {
                throw BackupError.malformed("table \(name) names a column twice")
            }
            columns = list
            rowsInTable = 0
            record = .table(name: name, columns: list)
        case .row:
            guard let columns else { throw BackupError.malformed("a row is outside any table") }
            var values: [BackupValue] = []
            values.reserveCapacity(columns.count)
            for column in columns {
                let value = try body.value()
                if let type = value.type, type != column.type {
                    throw BackupError.malformed("a value of column \(column.name) has the wrong type")
                }
                values.append(value)
            }
            rowsInTable += 1
            record = .row(values)
        case .tableEnd:
            guard columns != nil else { throw BackupError.malformed("a table ends that did not start") }
            let rows = Int64(bitPattern: try body.uint64())
            let expected = header.tables[tableIndex]
            guard rows == rowsInTable, rows == expected.rows else {
                throw BackupError.countMismatch(table: expected.name, header: expected.rows, found: rowsInTable)
            }
            columns = nil
            tableIndex += 1
            record = .tableEnd(rows: rows)
        case .keyring:
            guard header.includesKeyring, !sawKeyring, columns == nil else {
                throw BackupError.malformed("a keyring appears where none is expected")
            }
            let count = Int(try body.uint16())
            var keyring = Keyring()
            for _ in 0..<count {
                let id = try body.string16()
                let material = Array(try body.take(32))
                do {
                    keyring.add(try MasterKey(id: id, material: material))
                } catch {
                    throw BackupError.malformed("a master key in the backup is not valid")
                }
            }
            sawKeyring = true
            record = .keyring(keyring)
        case .end:
            guard columns == nil, tableIndex == header.tables.count else {
                let missing = tableIndex < header.tables.count ? header.tables[tableIndex].name : "?"
                throw BackupError.malformed("it ends before table \(missing)")
            }
            guard !header.includesKeyring || sawKeyring else {
                throw BackupError.malformed("the header promises the master keys but none are inside")
            }
            guard offset == plaintext.count, sawFinal else {
                throw BackupError.malformed("data follows the end record")
            }
            // Nothing may follow the final chunk.
            guard try source.read(1).isEmpty else { throw BackupError.trailingData }
            ended = true
            record = .end
        }
        guard body.remaining == 0 else { throw BackupError.malformed("a record has bytes left over") }
        return record
    }

    /// Reads every remaining record, checking them all.
    ///
    /// - Throws: as ``next()``.
    public func verifyToEnd() throws {
        while try next() != nil {}
    }

    /// The next `count` plaintext bytes, opening chunks as needed.
    private func bytes(_ count: Int) throws -> [UInt8] {
        if plaintext.count - offset >= count {
            defer { offset += count }
            return Array(plaintext[offset..<(offset + count)])
        }
        var result = Array(plaintext[offset...])
        plaintext.removeAll(keepingCapacity: true)
        offset = 0
        while result.count < count {
            guard !sawFinal else { throw BackupError.malformed("the stream ends inside a record") }
            try openChunk()
            let needed = count - result.count
            let available = min(needed, plaintext.count)
            result.append(contentsOf: plaintext[0..<available])
            offset = available
        }
        return result
    }

    private func openChunk() throws {
        let lengthBytes = try source.read(4)
        guard lengthBytes.count == 4 else { throw BackupError.truncated(afterChunks: chunkIndex) }
        var lengthCursor = ByteCursor(lengthBytes)
        let length = Int(try lengthCursor.uint32())
        guard length >= 16, length <= header.chunkSize + 16 else {
            // A length no writer produces: a changed length field, or bytes cut from the file.
            throw BackupError.tampered(chunk: chunkIndex)
        }
        let sealed = try source.read(length)
        guard sealed.count == length else { throw BackupError.truncated(afterChunks: chunkIndex) }
        let ciphertext = sealed[0..<(length - 16)]
        let tag = sealed[(length - 16)...]
        for final in [false, true] {
            if let opened = try? open(ciphertext, tag: tag, index: UInt64(chunkIndex), final: final) {
                plaintext = opened
                offset = 0
                sawFinal = final
                chunkIndex += 1
                return
            }
        }
        // Tell a moved chunk from a changed one: does it open at another position near this one?
        let window = max(0, chunkIndex - 32)...(chunkIndex + 32)
        for other in window where other != chunkIndex {
            for final in [false, true]
            where (try? open(ciphertext, tag: tag, index: UInt64(other), final: final)) != nil {
                throw BackupError.reordered(chunk: chunkIndex, holds: other)
            }
        }
        throw BackupError.tampered(chunk: chunkIndex)
    }

    private func open(_ ciphertext: ArraySlice<UInt8>, tag: ArraySlice<UInt8>, index: UInt64, final: Bool) throws
        -> [UInt8]
    {
        let box = try AES.GCM.SealedBox(
            nonce: try chunkNonce(index: index, final: final), ciphertext: ciphertext, tag: tag)
        return Array(try AES.GCM.open(box, using: keys.encryption, authenticating: associatedData))
    }
}

/// A backup file read in large blocks.
public struct FileByteSource: BackupByteSource {
    private let handle: FileHandle

    /// Opens `path` for reading.
    ///
    /// - Throws: `BackupError.io` if it cannot be opened.
    public init(path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw BackupError.io("cannot open the backup file \(path)")
        }
        self.handle = handle
    }

    public mutating func read(_ count: Int) throws -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(count)
        while result.count < count {
            let data: Data?
            do {
                data = try handle.read(upToCount: count - result.count)
            } catch {
                throw BackupError.io("cannot read the backup file")
            }
            guard let data, !data.isEmpty else { break }
            result.append(contentsOf: data)
        }
        return result
    }

    /// Closes the file.
    public func close() {
        try? handle.close()
    }
}

/// Bytes in memory, for tests and checks.
public struct MemoryByteSource: BackupByteSource {
    private let bytes: [UInt8]
    private var offset = 0

    /// Reads from `data`.
    public init(_ data: Data) {
        bytes = Array(data)
    }

    public mutating func read(_ count: Int) throws -> [UInt8] {
        let available = min(count, bytes.count - offset)
        defer { offset += available }
        return Array(bytes[offset..<(offset + available)])
    }
}
