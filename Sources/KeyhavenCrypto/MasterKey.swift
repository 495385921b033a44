import Crypto
import Foundation
import KeyhavenCore

/// A master key (KEK): wraps the per-secret data keys. Only its `id` is ever printed.
public struct MasterKey: Sendable {
    /// The key's name, stored next to every data key it wraps.
    public let id: String
    package let key: SymmetricKey

    /// Creates a master key from exactly 32 bytes of key material.
    ///
    /// - Throws: `KeyhavenError.keyring` if the id is not a valid key id or the material is not 32 bytes.
    public init(id: String, material: some ContiguousBytes) throws {
        guard MasterKey.isValidID(id) else {
            throw KeyhavenError.keyring(
                "master key id \"\(id)\" is invalid: use 1 to 64 letters, digits, '.', '_' or '-'")
        }
        let key = SymmetricKey(data: material)
        guard key.bitCount == 256 else {
            throw KeyhavenError.keyring("master key \(id) must be 32 bytes (256 bits), got \(key.bitCount / 8)")
        }
        self.id = id
        self.key = key
    }

    /// Creates a master key from base64 text (the form of `KEYHAVEN_MASTER_KEY` and of keyring files).
    ///
    /// - Throws: `KeyhavenError.keyring` if the text is not base64 of exactly 32 bytes.
    public init(id: String, base64: String) throws {
        guard var bytes = Data(base64Encoded: base64.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw KeyhavenError.keyring("master key \(id) is not valid base64")
        }
        defer { bytes.resetBytes(in: 0..<bytes.count) }
        try self.init(id: id, material: bytes)
    }

    /// Generates a new random 256-bit master key with a fresh id (``newID(now:)``).
    public static func generate() -> MasterKey {
        MasterKey(checkedID: newID(), key: SymmetricKey(size: .bits256))
    }

    /// Generates a new random 256-bit master key with the id `id`.
    ///
    /// - Throws: `KeyhavenError.keyring` if `id` is not a valid key id (``isValidID(_:)``).
    public static func generate(id: String) throws -> MasterKey {
        try MasterKey(id: id, material: SymmetricKey(size: .bits256))
    }

    /// A key whose id is valid by construction and whose material is 256 bits.
    private init(checkedID: String, key: SymmetricKey) {
        self.id = checkedID
        self.key = key
    }

    /// A fresh id of the form `kek-YYYYMMDD-xxxxxxxx`.
    public static func newID(now: Date = Date()) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day], from: now)
        let date = String(format: "%04d%02d%02d", parts.year ?? 0, parts.month ?? 0, parts.day ?? 0)
        let suffix = Hex.encode((0..<4).map { _ in UInt8.random(in: 0...255) })
        return "kek-\(date)-\(suffix)"
    }

    /// Whether `id` is acceptable as a key id: 1–64 ASCII letters, digits, `.`, `_` or `-`.
    public static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64
            && id.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == 0x2E || byte == 0x5F || byte == 0x2D
            }
    }

    /// The key material in base64, for writing a keyring file.
    func base64Material() -> String {
        key.withUnsafeBytes { Data($0).base64EncodedString() }
    }
}

extension MasterKey: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The key id only, never the material.
    public var description: String { "MasterKey(\(id), <redacted>)" }
    /// The key id only, never the material.
    public var debugDescription: String { description }
    /// A mirror that shows the id only.
    public var customMirror: Mirror { Mirror(self, children: ["id": id], displayStyle: .struct) }
}

/// The set of master keys this process holds, by id.
public struct Keyring: Sendable {
    /// The keys, in the order they were added (oldest first).
    public private(set) var keys: [MasterKey]

    /// Creates a keyring; later keys with an id already present are ignored.
    public init(_ keys: [MasterKey] = []) {
        self.keys = []
        for key in keys { add(key) }
    }

    /// The key with this id, if held.
    public func key(id: String) -> MasterKey? {
        keys.first { $0.id == id }
    }

    /// Every id held.
    public var ids: [String] { keys.map(\.id) }

    /// Whether no key is held.
    public var isEmpty: Bool { keys.isEmpty }

    /// Adds a key unless one with the same id is already held.
    public mutating func add(_ key: MasterKey) {
        if self.key(id: key.id) == nil { keys.append(key) }
    }

    /// Removes the key with this id.
    public mutating func remove(id: String) {
        keys.removeAll { $0.id == id }
    }
}
