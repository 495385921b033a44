import Crypto
import Foundation
import KeyhavenCore

/// The key that chains the audit trail (SPEC §8): HMAC-SHA-256 over each event and over each checkpoint, so that
/// someone who can write the database but does not hold the master keys cannot recompute the chain.
///
/// It is a random 256-bit key, stored only wrapped by a master key (like a data key), and re-wrapped when the
/// master key rotates; events name the audit key's id, which never changes.
public struct AuditKey: Sendable {
    /// The key's id, stored with every event it chains.
    public let id: String
    let key: SymmetricKey

    /// A new random key with a new id (`audit-YYYYMMDD-xxxxxxxx`).
    public static func generate() -> AuditKey {
        AuditKey(
            id: MasterKey.newID().replacingOccurrences(of: "kek-", with: "audit-"), key: SymmetricKey(size: .bits256))
    }

    /// The key sealed under `kek`, bound to both ids: nonce ‖ ciphertext ‖ tag.
    ///
    /// - Throws: `KeyhavenError.internalError` if sealing fails (it does not for valid keys).
    public func wrapped(by kek: MasterKey) throws -> Data {
        do {
            let box = try key.withUnsafeBytes { bytes in
                try AES.GCM.seal(bytes, using: kek.key, authenticating: Self.associatedData(id: id, kekID: kek.id))
            }
            guard let combined = box.combined else { throw KeyhavenError.internalError }
            return combined
        } catch {
            throw KeyhavenError.internalError
        }
    }

    /// Opens a wrapped audit key.
    ///
    /// - Throws: `KeyhavenError.decryptionFailed` if it was changed, moved, or `kek` is not the key that wrapped it.
    public static func unwrap(_ wrapped: Data, id: String, kek: MasterKey) throws -> AuditKey {
        do {
            let box = try AES.GCM.SealedBox(combined: wrapped)
            var material = try AES.GCM.open(box, using: kek.key, authenticating: associatedData(id: id, kekID: kek.id))
            defer { material.resetBytes(in: 0..<material.count) }
            guard material.count == 32 else { throw KeyhavenError.decryptionFailed }
            return AuditKey(id: id, key: SymmetricKey(data: material))
        } catch {
            throw KeyhavenError.decryptionFailed
        }
    }

    /// HMAC-SHA-256 of `text`, hex.
    public func mac(_ text: String) -> String { mac(bytes: Array(text.utf8)) }

    /// HMAC-SHA-256 of `bytes`, hex.
    public func mac(bytes: [UInt8]) -> String { Hex.encode(HMAC<SHA256>.authenticationCode(for: bytes, using: key)) }

    /// Whether `expected` is the MAC of `text`, compared in constant time.
    public func verify(_ expected: String, of text: String) -> Bool { verify(expected, ofBytes: Array(text.utf8)) }

    /// Whether `expected` is the MAC of `bytes`, compared in constant time.
    public func verify(_ expected: String, ofBytes bytes: [UInt8]) -> Bool {
        guard let digest = Self.hexBytes(expected) else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(digest, authenticating: bytes, using: key)
    }

    static func associatedData(id: String, kekID: String) -> Data { Data("keyhaven:audit-key:v1|\(id)|\(kekID)".utf8) }

    static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case 0x30...0x39: digit - 0x30
        case 0x61...0x66: digit - 0x61 + 10
        default: nil
        }
    }
}

extension AuditKey: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The key id only, never the material.
    public var description: String { "AuditKey(\(id), <redacted>)" }
    /// The key id only, never the material.
    public var debugDescription: String { description }
    /// A mirror that shows the id only.
    public var customMirror: Mirror { Mirror(self, children: ["id": id], displayStyle: .struct) }
}
