import Crypto
import Foundation
import KeyhavenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The row a secret version is bound to: its ciphertext opens only in this exact row.
public struct SecretBinding: Sendable, Hashable {
    /// The secret row's id.
    public var secretID: UUID
    /// The integration the row belongs to.
    public var integrationID: UUID
    /// The owner of that integration.
    public var ownerID: UUID
    /// The version number of the row.
    public var version: Int

    /// Creates a binding.
    public init(secretID: UUID, integrationID: UUID, ownerID: UUID, version: Int) {
        self.secretID = secretID
        self.integrationID = integrationID
        self.ownerID = ownerID
        self.version = version
    }

    /// Calls `body` with `keyhaven:v1|<secret_id>|<integration_id>|<owner_id>|<version>` (SPEC §4), ids in
    /// lowercase, built on the stack: this runs on every seal and open.
    func withAssociatedData<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeTemporaryAllocation(byteCount: 160, alignment: 1) { buffer in
            var writer = ByteWriter(buffer)
            writer.append("keyhaven:v1|")
            writer.append(secretID)
            writer.append("|")
            writer.append(integrationID)
            writer.append("|")
            writer.append(ownerID)
            writer.append("|")
            writer.append(String(version))
            return try body(UnsafeRawBufferPointer(rebasing: buffer[0..<writer.count]))
        }
    }
}

/// What is stored for one secret version: nothing here is readable without the master key.
public struct SealedSecret: Sendable, Equatable {
    /// The master key that wraps the data key.
    public var kekID: String
    /// The data key sealed under the master key: nonce (12) ‖ ciphertext (32) ‖ tag (16).
    public var wrappedDEK: Data
    /// The nonce the credential was sealed with (12 bytes).
    public var nonce: Data
    /// The sealed credential: ciphertext ‖ tag (16).
    public var ciphertext: Data

    /// Creates a sealed secret from its stored parts.
    public init(kekID: String, wrappedDEK: Data, nonce: Data, ciphertext: Data) {
        self.kekID = kekID
        self.wrappedDEK = wrappedDEK
        self.nonce = nonce
        self.ciphertext = ciphertext
    }
}

/// Envelope encryption (SPEC §4): a fresh AES-256-GCM data key per secret version, wrapped by a master key.
public enum Envelope {
    /// Seals `plaintext` for the row `binding` under a fresh data key wrapped by `kek`.
    ///
    /// - Throws: `KeyhavenError.internalError` only if the platform's AES-GCM fails, which it does not for valid keys.
    public static func seal(_ plaintext: SecretBytes, binding: SecretBinding, kek: MasterKey) throws -> SealedSecret {
        try withRandomBytes(56) { random in try seal(plaintext, binding: binding, kek: kek, random: random) }
    }

    /// Seals a new version for a new row: the row's id (a random UUID), the data key and both nonces all come from
    /// one read of the system CSPRNG. This is what every put does.
    ///
    /// - Throws: `KeyhavenError.internalError` only if the platform's AES-GCM fails.
    public static func sealNewRow(
        _ plaintext: SecretBytes, integrationID: UUID, ownerID: UUID, version: Int, kek: MasterKey
    ) throws -> (SecretBinding, SealedSecret) {
        try withRandomBytes(56 + 16) { random in
            var id = Array(random[56..<72])
            id[6] = (id[6] & 0x0F) | 0x40  // version 4
            id[8] = (id[8] & 0x3F) | 0x80  // RFC 4122 variant
            let secretID = UUID(
                uuid: (
                    id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7], id[8], id[9], id[10], id[11], id[12],
                    id[13],
                    id[14], id[15]
                ))
            let binding = SecretBinding(
                secretID: secretID, integrationID: integrationID, ownerID: ownerID, version: version)
            let sealed = try seal(
                plaintext, binding: binding, kek: kek, random: UnsafeRawBufferPointer(rebasing: random[0..<56]))
            return (binding, sealed)
        }
    }

    /// `random`: 32 bytes of data key, then the two 12-byte nonces.
    private static func seal(
        _ plaintext: SecretBytes, binding: SecretBinding, kek: MasterKey, random: UnsafeRawBufferPointer
    ) throws -> SealedSecret {
        let dek = SymmetricKey(data: random[0..<32])
        do {
            let nonce = try AES.GCM.Nonce(data: random[32..<44])
            let box = try plaintext.withUnsafeBytes { bytes in
                try binding.withAssociatedData { aad in
                    try AES.GCM.seal(bytes, using: dek, nonce: nonce, authenticating: aad)
                }
            }
            // nonce ‖ ciphertext ‖ tag in one buffer: the two stored parts are slices of it, not copies.
            let combined = box.combined!
            return SealedSecret(
                kekID: kek.id,
                wrappedDEK: try wrap(
                    dek, secretID: binding.secretID, kek: kek, nonce: AES.GCM.Nonce(data: random[44..<56])),
                nonce: combined.prefix(12),
                ciphertext: combined.dropFirst(12)
            )
        } catch {
            throw KeyhavenError.internalError
        }
    }

    /// Calls `body` with `count` bytes from the operating system's CSPRNG, in a stack buffer zeroed afterwards.
    static func withRandomBytes<R>(_ count: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        // getentropy(3) reads up to 256 bytes from the kernel CSPRNG in one call (getrandom on Linux).
        precondition(count <= 256)
        return try withUnsafeTemporaryAllocation(byteCount: count, alignment: 1) { buffer in
            guard getentropy(buffer.baseAddress!, count) == 0 else {
                fatalError("the system random number generator failed")
            }
            defer { _ = memset(buffer.baseAddress!, 0, count) }
            return try body(UnsafeRawBufferPointer(buffer))
        }
    }

    /// Opens a sealed secret stored in the row `binding`, with the master key named by `sealed.kekID`.
    ///
    /// - Throws: `KeyhavenError.decryptionFailed` if any byte was changed, the row was moved, or the key is wrong;
    ///   `KeyhavenError.keyring` if the keyring does not hold the master key.
    public static func open(_ sealed: SealedSecret, binding: SecretBinding, keyring: Keyring) throws -> SecretBytes {
        guard let kek = keyring.key(id: sealed.kekID) else {
            throw KeyhavenError.keyring("master key \(sealed.kekID) is not in the keyring")
        }
        return try open(sealed, binding: binding, kek: kek)
    }

    /// Opens a sealed secret with the given master key.
    ///
    /// - Throws: `KeyhavenError.decryptionFailed` if any byte was changed, the row was moved, or the key is wrong.
    public static func open(_ sealed: SealedSecret, binding: SecretBinding, kek: MasterKey) throws -> SecretBytes {
        let dek = try unwrap(sealed.wrappedDEK, secretID: binding.secretID, kek: kek)
        guard sealed.nonce.count == 12, sealed.ciphertext.count >= 16 else { throw KeyhavenError.decryptionFailed }
        do {
            var combined = Data(capacity: 12 + sealed.ciphertext.count)
            combined.append(sealed.nonce)
            combined.append(sealed.ciphertext)
            let box = try AES.GCM.SealedBox(combined: combined)
            // The decrypted buffer itself becomes the SecretBytes, which zeroes it when released.
            return SecretBytes(
                taking: try binding.withAssociatedData { aad in try AES.GCM.open(box, using: dek, authenticating: aad) }
            )
        } catch {
            throw KeyhavenError.decryptionFailed
        }
    }

    /// Re-wraps a data key from one master key to another; the sealed credential itself is untouched.
    ///
    /// - Throws: `KeyhavenError.decryptionFailed` if `wrappedDEK` does not open under `from`.
    public static func rewrap(_ wrappedDEK: Data, secretID: UUID, from: MasterKey, to: MasterKey) throws -> Data {
        let dek = try unwrap(wrappedDEK, secretID: secretID, kek: from)
        do {
            return try wrap(dek, secretID: secretID, kek: to, nonce: AES.GCM.Nonce())
        } catch {
            throw KeyhavenError.internalError
        }
    }

    /// Calls `body` with `keyhaven:dek:v1|<secret_id>|<kek_id>` (SPEC §4).
    static func withDEKAssociatedData<R>(secretID: UUID, kekID: String, _ body: (UnsafeRawBufferPointer) throws -> R)
        rethrows -> R
    {
        // Key ids are at most 64 bytes (MasterKey.isValidID).
        try withUnsafeTemporaryAllocation(byteCount: 128, alignment: 1) { buffer in
            var writer = ByteWriter(buffer)
            writer.append("keyhaven:dek:v1|")
            writer.append(secretID)
            writer.append("|")
            writer.append(kekID)
            return try body(UnsafeRawBufferPointer(rebasing: buffer[0..<writer.count]))
        }
    }

    static func wrap(_ dek: SymmetricKey, secretID: UUID, kek: MasterKey, nonce: AES.GCM.Nonce) throws -> Data {
        let box = try dek.withUnsafeBytes { bytes in
            try withDEKAssociatedData(secretID: secretID, kekID: kek.id) { aad in
                try AES.GCM.seal(bytes, using: kek.key, nonce: nonce, authenticating: aad)
            }
        }
        // A 12-byte nonce always yields a combined representation.
        return box.combined!
    }

    static func unwrap(_ wrappedDEK: Data, secretID: UUID, kek: MasterKey) throws -> SymmetricKey {
        do {
            let box = try AES.GCM.SealedBox(combined: wrappedDEK)
            var material = try withDEKAssociatedData(secretID: secretID, kekID: kek.id) { aad in
                try AES.GCM.open(box, using: kek.key, authenticating: aad)
            }
            defer { material.resetBytes(in: 0..<material.count) }
            guard material.count == 32 else { throw KeyhavenError.decryptionFailed }
            return SymmetricKey(data: material)
        } catch {
            throw KeyhavenError.decryptionFailed
        }
    }
}

/// The canary each master key seals, so a wrong key is detected at start instead of request by request.
public enum Canary {
    static let plaintext = Data("keyhaven canary v1: this master key opens this database".utf8)

    static func associatedData(kekID: String) -> Data { Data("keyhaven:canary:v1|\(kekID)".utf8) }

    /// Seals the canary under `kek`; the result is stored next to the key's id in the database.
    public static func make(_ kek: MasterKey) -> Data {
        // AES-GCM with a valid 256-bit key and a random 12-byte nonce does not fail.
        try! AES.GCM.seal(plaintext, using: kek.key, authenticating: associatedData(kekID: kek.id)).combined!
    }

    /// Whether `canary` was sealed by this very key.
    public static func verify(_ canary: Data, kek: MasterKey) -> Bool {
        guard let box = try? AES.GCM.SealedBox(combined: canary),
            let opened = try? AES.GCM.open(box, using: kek.key, authenticating: associatedData(kekID: kek.id))
        else { return false }
        return opened == plaintext
    }
}

/// Writes associated data into a stack buffer (ids as canonical lowercase `8-4-4-4-12` hex) without building
/// intermediate strings on the hot path of every seal and open.
struct ByteWriter {
    let buffer: UnsafeMutableRawBufferPointer
    private(set) var count = 0
    static let hexDigits: StaticString = "0123456789abcdef"

    init(_ buffer: UnsafeMutableRawBufferPointer) {
        self.buffer = buffer
    }

    mutating func append(_ byte: UInt8) {
        precondition(count < buffer.count)
        buffer[count] = byte
        count += 1
    }

    mutating func append(_ text: String) {
        for byte in text.utf8 { append(byte) }
    }

    mutating func append(_ id: UUID) {
        let digits = Self.hexDigits.utf8Start
        withUnsafeBytes(of: id.uuid) { raw in
            for (index, byte) in raw.enumerated() {
                if index == 4 || index == 6 || index == 8 || index == 10 { append(UInt8(ascii: "-")) }
                append(digits[Int(byte >> 4)])
                append(digits[Int(byte & 0x0F)])
            }
        }
    }
}
