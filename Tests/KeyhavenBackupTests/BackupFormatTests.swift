import Crypto
import Foundation
import KeyhavenCore
import KeyhavenCrypto
import Testing

@testable import KeyhavenBackup

/// The backup file format on its own, without a database: what round-trips, and that every kind of damage is
/// refused with its own message and never crashes the reader.
@Suite("The backup file format")
struct BackupFormatTests {
    /// Cheap scrypt parameters, so the tests stay fast (the bounds still apply).
    static let fastKDF = BackupKDF(name: "scrypt", log2N: 10, r: 8, p: 1)
    static let columns: [BackupColumn] = [
        .init("id", .uuid), .init("n", .int), .init("x", .double), .init("name", .text), .init("blob", .bytes),
        .init("flag", .bool), .init("at", .date),
    ]

    final class Sink: @unchecked Sendable {
        var data = Data()
    }

    /// A backup of one table of `rows` rows, in chunks of `chunkSize` bytes.
    static func backup(
        secret: BackupSecret, rows: Int = 120, chunkSize: Int = 1024, keyring: Keyring? = nil, canary: String = "c"
    ) throws -> Data {
        let sink = Sink()
        let header = BackupHeader(
            source: "sqlite", schemaVersion: 7, includesKeyring: keyring != nil,
            tables: [.init(name: "t", rows: Int64(rows))], chunkSize: chunkSize)
        let writer = try BackupWriter(header: header, secret: secret, kdf: fastKDF) { sink.data.append($0) }
        if let keyring { try writer.append(.keyring(keyring)) }
        try writer.append(.table(name: "t", columns: columns))
        for index in 0..<rows { try writer.append(.row(row(index, canary: canary))) }
        try writer.append(.tableEnd(rows: Int64(rows)))
        try writer.finish()
        return sink.data
    }

    static func row(_ index: Int, canary: String) -> [BackupValue] {
        [
            .uuid(UUID()), .int(Int64(index) - 3), index % 3 == 0 ? .null : .double(Double(index) / 7),
            .text("row \(index) \(canary) ünïcödé"), .bytes(Data((0..<(index % 40)).map { UInt8($0) })),
            .bool(index % 2 == 0), .date(Date(timeIntervalSinceReferenceDate: 812_345_678.123_456 + Double(index))),
        ]
    }

    static func read(_ data: Data, secret: BackupSecret) throws -> [BackupRecord] {
        let reader = try BackupReader(source: MemoryByteSource(data), secret: secret)
        var records: [BackupRecord] = []
        while let record = try reader.next() { records.append(record) }
        return records
    }

    /// The error reading `data` fails with (nil if it reads to the end).
    static func failure(_ data: Data, secret: BackupSecret) -> BackupError? {
        do {
            _ = try read(data, secret: secret)
            return nil
        } catch let error as BackupError {
            return error
        } catch {
            return .io("unexpected error type \(type(of: error))")
        }
    }

    /// Where each chunk starts and how long it is (length field included), parsed from a well-formed file.
    static func chunks(_ data: Data) -> (preamble: Int, chunks: [Range<Int>]) {
        let bytes = Array(data)
        let jsonLength = bytes[10..<14].reduce(0) { $0 << 8 | Int($1) }
        var offset = 14 + jsonLength + 64
        let preamble = offset
        var ranges: [Range<Int>] = []
        while offset < bytes.count {
            let length = bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
            ranges.append(offset..<(offset + 4 + length))
            offset += 4 + length
        }
        return (preamble, ranges)
    }

    static func flipped(_ data: Data, at position: Int) -> Data {
        var copy = data
        copy[position] ^= 0x01
        return copy
    }

    let key = try! BackupSecret.key(SymmetricKey(size: .bits256))

    @Test("every record and value round-trips, null and unicode and exact dates included")
    func roundTrip() throws {
        let data = try Self.backup(secret: key)
        let records = try Self.read(data, secret: key)
        #expect(records.count == 120 + 3)
        guard case .table(let name, let columns) = records[0] else {
            Issue.record("no table first")
            return
        }
        #expect(name == "t" && columns == Self.columns)
        for index in [0, 1, 2, 59, 119] {
            guard case .row(let values) = records[index + 1] else {
                Issue.record("not a row")
                continue
            }
            let expected = Self.row(index, canary: "c")
            #expect(Array(values[1...]) == Array(expected[1...]))
        }
        guard case .end = records.last else {
            Issue.record("no end record")
            return
        }
        #expect(Self.chunks(data).chunks.count > 4, "the test needs several chunks")
    }

    @Test("a passphrase round-trips; a wrong passphrase or the other kind of secret is refused with its own message")
    func passphrases() throws {
        let secret = try BackupSecret.passphrase("correct horse battery staple")
        let data = try Self.backup(secret: secret, rows: 5)
        #expect(try Self.read(data, secret: secret).count == 8)
        #expect(Self.failure(data, secret: try .passphrase("correct horse battery stapler")) == .wrongKey)
        #expect(Self.failure(data, secret: key) == .wrongKindOfSecret(needsPassphrase: true))
        let keyed = try Self.backup(secret: key, rows: 5)
        #expect(Self.failure(keyed, secret: secret) == .wrongKindOfSecret(needsPassphrase: false))
        #expect(Self.failure(keyed, secret: try .key(SymmetricKey(size: .bits256))) == .wrongKey)
        #expect(throws: BackupError.self) { try BackupSecret.passphrase("short") }
    }

    @Test("a flipped byte in the header is refused, each part with its own message")
    func headerFlips() throws {
        let data = try Self.backup(secret: key)
        let bytes = Array(data)
        let (preamble, _) = Self.chunks(data)
        let json = String(decoding: bytes[14..<(preamble - 64)], as: UTF8.self)
        let createdAt = try #require(json.range(of: "created_at"))
        let createdAtOffset = 14 + json.utf8.distance(from: json.startIndex, to: createdAt.upperBound) + 5
        #expect(Self.failure(Self.flipped(data, at: 0), secret: key) == .notABackup)
        #expect(Self.failure(Self.flipped(data, at: 7), secret: key) == .notABackup)
        #expect(Self.failure(Self.flipped(data, at: 9), secret: key) == .unknownVersion(0))
        #expect(Self.failure(Self.flipped(data, at: 10), secret: key) == .damagedHeader("its length is out of bounds"))
        #expect(
            Self.failure(Self.flipped(data, at: createdAtOffset), secret: key)
                == .damagedHeader("its MAC does not match"))
        #expect(Self.failure(Self.flipped(data, at: preamble - 64), secret: key) == .wrongKey)
        #expect(
            Self.failure(Self.flipped(data, at: preamble - 1), secret: key) == .damagedHeader("its MAC does not match"))
        // Every other position of the header is refused too, by one of the header's messages.
        for position in stride(from: 0, to: preamble, by: 3) {
            let error = Self.failure(Self.flipped(data, at: position), secret: key)
            switch error {
            case .notABackup?, .unknownVersion?, .damagedHeader?, .wrongKey?: break
            default: Issue.record("position \(position): \(String(describing: error))")
            }
        }
    }

    @Test("a flipped byte in a chunk or in its tag is refused as tampered at that chunk")
    func chunkFlips() throws {
        let data = try Self.backup(secret: key)
        let (_, chunks) = Self.chunks(data)
        for (index, range) in chunks.enumerated() {
            for position in [range.lowerBound + 4, range.lowerBound + 4 + (range.count - 4) / 2, range.upperBound - 17]
            {
                #expect(Self.failure(Self.flipped(data, at: position), secret: key) == .tampered(chunk: index))
            }
            // The tag's first and last bytes.
            #expect(Self.failure(Self.flipped(data, at: range.upperBound - 16), secret: key) == .tampered(chunk: index))
            #expect(Self.failure(Self.flipped(data, at: range.upperBound - 1), secret: key) == .tampered(chunk: index))
        }
    }

    @Test("a truncated file, a dropped final chunk and trailing bytes are each refused with their own message")
    func truncation() throws {
        let data = try Self.backup(secret: key)
        let (preamble, chunks) = Self.chunks(data)
        #expect(Self.failure(data.prefix(chunks[2].upperBound), secret: key) == .truncated(afterChunks: 3))
        #expect(Self.failure(data.prefix(chunks[2].upperBound + 2), secret: key) == .truncated(afterChunks: 3))
        #expect(Self.failure(data.prefix(chunks[2].upperBound + 40), secret: key) == .truncated(afterChunks: 3))
        #expect(Self.failure(data.prefix(data.count - 1), secret: key) == .truncated(afterChunks: chunks.count - 1))
        #expect(Self.failure(data.prefix(preamble), secret: key) == .truncated(afterChunks: 0))
        #expect(Self.failure(data.prefix(preamble - 10), secret: key) == .damagedHeader("the file ends inside it"))
        #expect(Self.failure(data + Data([0]), secret: key) == .trailingData)
        // A whole extra copy of the last chunk after the final one.
        let last = try #require(chunks.last)
        #expect(Self.failure(data + data[last], secret: key) == .trailingData)
    }

    @Test("two swapped chunks are refused as reordered")
    func swapped() throws {
        let data = try Self.backup(secret: key)
        let (_, chunks) = Self.chunks(data)
        var swapped = Data(data[..<chunks[1].lowerBound])
        swapped.append(data[chunks[2]])
        swapped.append(data[chunks[1]])
        swapped.append(data[chunks[3].lowerBound...])
        #expect(Self.failure(swapped, secret: key) == .reordered(chunk: 1, holds: 2))
        // A chunk from another backup made with the same key does not authenticate here.
        let other = try Self.backup(secret: key)
        var spliced = Data(data[..<chunks[1].lowerBound])
        spliced.append(other[Self.chunks(other).chunks[1]])
        spliced.append(data[chunks[2].lowerBound...])
        #expect(Self.failure(spliced, secret: key) == .tampered(chunk: 1))
    }

    @Test("a header asking for unbounded scrypt work is refused before any work is done")
    func hostileKDF() throws {
        let data = try Self.backup(secret: try .passphrase("correct horse battery staple"), rows: 1)
        let range = try #require(data.range(of: Data("\"log2_n\":10".utf8)))
        for replacement in ["\"log2_n\":30", "\"log2_n\":-1", "\"log2_n\":99"] {
            var bytes = Array(data)
            let start = range.lowerBound - data.startIndex
            bytes.replaceSubrange(start..<(start + 11), with: Array(replacement.utf8))
            let error = Self.failure(Data(bytes), secret: try .passphrase("correct horse battery staple"))
            #expect(error == .damagedHeader("its key-derivation parameters are out of bounds"), "\(replacement)")
        }
    }

    @Test("random damage never crashes the reader: every damaged file is refused with a backup error")
    func randomDamage() throws {
        let data = try Self.backup(secret: key, rows: 40)
        var generator = SystemRandomNumberGenerator()
        for round in 0..<400 {
            var bytes = Array(data)
            switch round % 4 {
            case 0:
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(
                        in: 0...255, using: &generator)
                }
            case 1:
                bytes.removeLast(Int.random(in: 1..<bytes.count, using: &generator))
            case 2:
                let at = Int.random(in: 0..<bytes.count, using: &generator)
                bytes.insert(
                    contentsOf: (0..<Int.random(in: 1...8, using: &generator)).map { _ in UInt8.random(in: 0...255) },
                    at: at)
            default:
                let at = Int.random(in: 0..<(bytes.count - 8), using: &generator)
                bytes.removeSubrange(at..<(at + Int.random(in: 1...8, using: &generator)))
            }
            if bytes == Array(data) { continue }
            #expect(Self.failure(Data(bytes), secret: key) != nil, "round \(round) was accepted")
        }
        // Pure noise, and a valid preamble followed by noise.
        for length in [0, 1, 13, 100, 5000] {
            let noise = Data((0..<length).map { _ in UInt8.random(in: 0...255) })
            #expect(Self.failure(noise, secret: key) != nil)
            #expect(Self.failure(data.prefix(Self.chunks(data).preamble) + noise, secret: key) != nil)
        }
    }

    @Test("no canary in clear and no master key in clear; the keyring is inside only when asked for")
    func noClearText() throws {
        let canary = "sk-canary-" + UUID().uuidString
        let master = try MasterKey.generate(id: "kek-test")
        let material = master.key.withUnsafeBytes { Data($0) }
        for keyring in [nil, Keyring([master])] {
            let data = try Self.backup(secret: key, rows: 30, keyring: keyring, canary: canary)
            for needle in [Data(canary.utf8), material, Data(material.base64EncodedString().utf8)] {
                #expect(data.range(of: needle) == nil)
            }
            let records = try Self.read(data, secret: key)
            let keys = records.compactMap { record -> Keyring? in
                if case .keyring(let keyring) = record { return keyring }
                return nil
            }
            #expect(keys.count == (keyring == nil ? 0 : 1))
            if keyring != nil {
                let inside = try #require(keys.first?.key(id: "kek-test"))
                #expect(inside.key.withUnsafeBytes { Data($0) } == material)
            }
        }
    }
}

/// The temporary file a backup is written to, and what a killed writer leaves.
@Suite("Backup files being written")
struct BackupFileOutputTests {
    @Test("removeAbandoned takes a stale unlocked temporary file and leaves one being written and the finished backups")
    func abandonedFiles() throws {
        let folder = FileManager.default.temporaryDirectory.path + "/keyhaven-output-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let stale = folder + "/" + BackupFileOutput.temporaryPrefix + "1-dead-keyhaven.khbackup"
        let recent = folder + "/" + BackupFileOutput.temporaryPrefix + "2-new-keyhaven.khbackup"
        let done = folder + "/keyhaven-done.khbackup"
        for path in [stale, recent, done] {
            #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8)))
        }
        let old = Date().addingTimeInterval(-60)
        for path in [stale, done] {
            try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: path)
        }
        // A writer still at work: its file is old too, but locked.
        let writing = try BackupFileOutput(path: folder + "/keyhaven-writing.khbackup")
        try writing.write(Data("partial".utf8))
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: writing.temporaryPath)

        #expect(BackupFileOutput.removeAbandoned(in: folder) == 1)
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(
            FileManager.default.fileExists(atPath: recent), "created moments ago: its writer may not hold the lock yet")
        #expect(FileManager.default.fileExists(atPath: done))
        #expect(FileManager.default.fileExists(atPath: writing.temporaryPath))
        try writing.commit()
        #expect(FileManager.default.fileExists(atPath: folder + "/keyhaven-writing.khbackup"))
        #expect(!FileManager.default.fileExists(atPath: writing.temporaryPath))
    }
}
