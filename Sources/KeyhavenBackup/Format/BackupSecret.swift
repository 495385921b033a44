import Crypto
import Foundation
import KeyhavenCore
import _CryptoExtras

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What protects a backup: a passphrase (stretched with scrypt) or a 32-byte backup key. Never printed.
public struct BackupSecret: Sendable {
    enum Kind: Sendable {
        case passphrase(SecretBytes)
        case key(SymmetricKey)
    }

    let kind: Kind

    /// The shortest passphrase accepted, in bytes.
    public static let minimumPassphraseLength = 12
    /// The longest passphrase or key file read, in bytes.
    static let maximumFileLength = 4096

    /// A passphrase given directly (tests, embedding).
    ///
    /// - Throws: `BackupError.badSecret` if it is shorter than ``minimumPassphraseLength`` bytes.
    public static func passphrase(_ text: String) throws -> BackupSecret {
        guard text.utf8.count >= minimumPassphraseLength, text.utf8.count <= maximumFileLength else {
            throw BackupError.badSecret(
                "the passphrase must be \(minimumPassphraseLength) to \(maximumFileLength) bytes long")
        }
        return BackupSecret(kind: .passphrase(SecretBytes(utf8: text)))
    }

    /// A 32-byte backup key given directly (tests, embedding).
    ///
    /// - Throws: `BackupError.badSecret` if the key is not 256 bits.
    public static func key(_ key: SymmetricKey) throws -> BackupSecret {
        guard key.bitCount == 256 else { throw BackupError.badSecret("a backup key must be 32 bytes") }
        return BackupSecret(kind: .key(key))
    }

    /// Reads a passphrase file: its whole content, less one trailing newline.
    ///
    /// - Throws: `BackupError.badSecret` if the file cannot be read, can be read by other users, or holds a
    ///   passphrase shorter than ``minimumPassphraseLength`` bytes.
    public static func passphraseFile(_ path: String) throws -> BackupSecret {
        var bytes = try readPrivateFile(path, what: "passphrase file")
        defer { bytes.resetBytes(in: 0..<bytes.count) }
        if bytes.last == 0x0A { bytes.removeLast() }
        if bytes.last == 0x0D { bytes.removeLast() }
        guard bytes.count >= minimumPassphraseLength else {
            throw BackupError.badSecret(
                "the passphrase file \(path) must hold at least \(minimumPassphraseLength) bytes")
        }
        return BackupSecret(kind: .passphrase(SecretBytes(Array(bytes))))
    }

    /// Reads a backup key file: exactly 32 bytes, or the base64 text of 32 bytes (`openssl rand -base64 32`).
    ///
    /// - Throws: `BackupError.badSecret` if the file cannot be read, can be read by other users, or is neither.
    public static func keyFile(_ path: String) throws -> BackupSecret {
        var bytes = try readPrivateFile(path, what: "key file")
        defer { bytes.resetBytes(in: 0..<bytes.count) }
        if bytes.count == 32 { return BackupSecret(kind: .key(SymmetricKey(data: bytes))) }
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard var decoded = Data(base64Encoded: text), decoded.count == 32 else {
            throw BackupError.badSecret(
                "the key file \(path) must hold exactly 32 bytes or their base64 (openssl rand -base64 32)")
        }
        defer { decoded.resetBytes(in: 0..<decoded.count) }
        return BackupSecret(kind: .key(SymmetricKey(data: decoded)))
    }

    private static func readPrivateFile(_ path: String, what: String) throws -> Data {
        var info = stat()
        guard stat(path, &info) == 0 else { throw BackupError.badSecret("cannot read the \(what) \(path)") }
        guard info.st_mode & 0o077 == 0 else {
            throw BackupError.badSecret(
                "the \(what) \(path) can be read by other users; restrict it with: chmod 600 \(path)")
        }
        guard Int(info.st_size) <= maximumFileLength,
            let handle = FileHandle(forReadingAtPath: path),
            let data = try? handle.read(upToCount: maximumFileLength + 1)
        else {
            throw BackupError.badSecret("cannot read the \(what) \(path) (at most \(maximumFileLength) bytes)")
        }
        try? handle.close()
        guard data.count <= maximumFileLength else {
            throw BackupError.badSecret("the \(what) \(path) is longer than \(maximumFileLength) bytes")
        }
        return data
    }

    /// Whether the key is derived from a passphrase (and so needs KDF parameters in the header).
    var isPassphrase: Bool {
        if case .passphrase = kind { true } else { false }
    }

    /// The file's keys: the root key (scrypt of the passphrase, or the key itself) expanded with HKDF-SHA-256 under
    /// the file's salt into an encryption key and a MAC key.
    func derive(kdf: BackupKDF, salt: Data) throws -> BackupKeys {
        let root: SymmetricKey
        switch kind {
        case .key(let key):
            guard kdf.name == BackupKDF.noneName else { throw BackupError.wrongKindOfSecret(needsPassphrase: true) }
            root = key
        case .passphrase(let passphrase):
            guard kdf.name == BackupKDF.scryptName else { throw BackupError.wrongKindOfSecret(needsPassphrase: false) }
            do {
                root = try passphrase.withUnsafeBytes { bytes in
                    try KDF.Scrypt.deriveKey(
                        from: bytes, salt: salt, outputByteCount: 32, rounds: 1 << kdf.log2N, blockSize: kdf.r,
                        parallelism: kdf.p, maxMemory: kdf.memoryBytes + 65536)
                }
            } catch {
                throw BackupError.damagedHeader("its key-derivation parameters are not usable")
            }
        }
        let material = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: root, salt: salt, info: Data("keyhaven:backup:v1".utf8), outputByteCount: 64)
        return material.withUnsafeBytes { bytes in
            BackupKeys(
                encryption: SymmetricKey(data: UnsafeRawBufferPointer(rebasing: bytes[0..<32])),
                mac: SymmetricKey(data: UnsafeRawBufferPointer(rebasing: bytes[32..<64])))
        }
    }
}

extension BackupSecret: CustomStringConvertible, CustomDebugStringConvertible {
    /// Never the passphrase or key.
    public var description: String { "BackupSecret(<redacted>)" }
    /// Never the passphrase or key.
    public var debugDescription: String { description }
}

/// The two keys of one backup file.
struct BackupKeys {
    let encryption: SymmetricKey
    let mac: SymmetricKey
}

/// How a passphrase is stretched into a key: scrypt with cost `2^log2N`, block size `r` and parallelism `p`, or
/// nothing when a key file is used.
public struct BackupKDF: Sendable, Equatable, Codable {
    static let scryptName = "scrypt"
    static let noneName = "none"

    /// `scrypt` or `none`.
    public var name: String
    /// log2 of scrypt's cost parameter N.
    public var log2N: Int
    /// scrypt's block size.
    public var r: Int
    /// scrypt's parallelism.
    public var p: Int

    /// scrypt with N = 2^17, r = 8, p = 1: 128 MiB and about half a second per derivation (OWASP's recommended
    /// minimum for scrypt).
    public static let standard = BackupKDF(name: scryptName, log2N: 17, r: 8, p: 1)
    /// No stretching: the key file is already a random 256-bit key.
    public static let none = BackupKDF(name: noneName, log2N: 0, r: 0, p: 0)

    /// Creates parameters.
    public init(name: String, log2N: Int, r: Int, p: Int) {
        self.name = name
        self.log2N = log2N
        self.r = r
        self.p = p
    }

    enum CodingKeys: String, CodingKey {
        case name
        case log2N = "log2_n"
        case r, p
    }

    /// The memory scrypt needs with these parameters, in bytes.
    var memoryBytes: Int { 128 * r * ((1 << log2N) + p + 1) }

    /// Whether a file may ask for these parameters: scrypt between 2^10 and 2^20 with at most 1 GiB of memory, so
    /// a hostile file cannot make a restore allocate or compute without bound.
    var isAcceptable: Bool {
        switch name {
        case Self.noneName:
            return true
        case Self.scryptName:
            guard (10...20).contains(log2N), (1...32).contains(r), (1...16).contains(p) else { return false }
            return memoryBytes <= 1 << 30 && (1 << log2N) * r * p <= 1 << 24
        default:
            return false
        }
    }
}
