import Foundation
import KeyhavenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A keyring on disk: a JSON file, mode 0600, holding master keys by id.
///
/// ```json
/// {"format": "keyhaven-keyring", "version": 1,
///  "keys": [{"id": "kek-20260101-1a2b3c4d", "key": "<base64 of 32 bytes>", "created_at": "2026-01-01T00:00:00Z"}]}
/// ```
/// Writes go to a temporary file that is synced and renamed over the old one, so a crash leaves either the old
/// keyring or the new one, never half of one.
public struct KeyringFile: Sendable {
    /// The file's path.
    public let path: String

    /// Creates a reference to the keyring file at `path`; nothing is read yet.
    public init(path: String) {
        self.path = path
    }

    /// Whether the file exists.
    public var exists: Bool { FileManager.default.fileExists(atPath: path) }

    /// Whether group or others have any access to the file (it must be 0600 or stricter).
    public var isReadableByOthers: Bool {
        var info = stat()
        guard stat(path, &info) == 0 else { return false }
        return info.st_mode & 0o077 != 0
    }

    /// Reads every key in the file.
    ///
    /// - Throws: `KeyhavenError.keyring` if the file cannot be read or is not a valid keyring.
    public func load() throws -> Keyring {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw KeyhavenError.keyring("cannot read the keyring file \(path): \(Self.reason(error))")
        }
        let document: Document
        do {
            document = try Self.decoder.decode(Document.self, from: data)
        } catch {
            throw KeyhavenError.keyring("the keyring file \(path) is not a valid Keyhaven keyring")
        }
        guard document.format == Document.formatName, document.version == 1 else {
            throw KeyhavenError.keyring("the keyring file \(path) has an unknown format or version")
        }
        var keyring = Keyring()
        for entry in document.keys {
            guard keyring.key(id: entry.id) == nil else {
                throw KeyhavenError.keyring("the keyring file \(path) holds key \(entry.id) twice")
            }
            keyring.add(try MasterKey(id: entry.id, base64: entry.key))
        }
        return keyring
    }

    /// Replaces the file with `keyring`, creating parent folders; the file is created with mode 0600.
    ///
    /// - Throws: `KeyhavenError.keyring` if the file cannot be written.
    public func save(_ keyring: Keyring, now: Date = Date()) throws {
        let existingDates =
            (try? Self.decoder.decode(Document.self, from: Data(contentsOf: URL(fileURLWithPath: path))))
            .map { Dictionary($0.keys.map { ($0.id, $0.createdAt) }, uniquingKeysWith: { first, _ in first }) } ?? [:]
        let document = Document(
            keys: keyring.keys.map { key in
                Document.Entry(id: key.id, key: key.base64Material(), createdAt: existingDates[key.id] ?? now)
            })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        var data: Data
        do {
            data = try encoder.encode(document)
        } catch {
            throw KeyhavenError.keyring("cannot encode the keyring")
        }
        defer { data.resetBytes(in: 0..<data.count) }
        try writeAtomically(data)
    }

    private func writeAtomically(_ data: Data) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw KeyhavenError.keyring("cannot create the folder \(directory): \(Self.reason(error))")
            }
        }
        let temporary = "\(path).tmp-\(getpid())"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw KeyhavenError.keyring("cannot create \(temporary): \(Self.errnoText())") }
        let written = data.withUnsafeBytes { buffer -> Int in
            var offset = 0
            while offset < buffer.count {
                let count = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if count < 0 {
                    if errno == EINTR { continue }
                    return -1
                }
                offset += count
            }
            return offset
        }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == data.count, synced else {
            unlink(temporary)
            throw KeyhavenError.keyring("cannot write the keyring file \(path): \(Self.errnoText())")
        }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw KeyhavenError.keyring("cannot replace the keyring file \(path): \(Self.errnoText())")
        }
        // Make the rename itself durable.
        let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
    }

    private static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }

    private static func reason(_ error: any Error) -> String {
        (error as NSError).localizedDescription
    }

    struct Document: Codable {
        static let formatName = "keyhaven-keyring"
        var format = Document.formatName
        var version = 1
        var keys: [Entry]

        struct Entry: Codable {
            var id: String
            var key: String
            var createdAt: Date?

            enum CodingKeys: String, CodingKey {
                case id, key
                case createdAt = "created_at"
            }
        }
    }
}
