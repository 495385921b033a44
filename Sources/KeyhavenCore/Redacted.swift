import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Plaintext secret bytes: a decrypted credential or a key about to be sealed.
///
/// The bytes are zeroed when the last reference goes away, and the value never prints: `description`,
/// `debugDescription`, `dump` and string interpolation all show `<redacted>`. Read the bytes with
/// ``withUnsafeBytes(_:)`` for as short a time as possible.
public final class SecretBytes: Sendable {
    // Written only in `deinit`, after every reader is gone.
    nonisolated(unsafe) private var storage: Data

    /// Takes ownership of `bytes`; the caller should drop its own copy.
    public init(_ bytes: [UInt8]) {
        self.storage = Data(bytes)
    }

    /// Takes ownership of `data` without copying it; the caller must not keep or reuse it.
    public init(taking data: Data) {
        self.storage = data
    }

    /// Copies the UTF-8 bytes of a string.
    public convenience init(utf8 string: String) {
        self.init(Array(string.utf8))
    }

    /// The number of bytes.
    public var count: Int { storage.count }

    /// Calls `body` with the plaintext bytes.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes(body)
    }

    /// Compares two secrets in time that depends only on their lengths.
    public func constantTimeEquals(_ other: SecretBytes) -> Bool {
        guard count == other.count else { return false }
        var difference: UInt8 = 0
        for (left, right) in zip(storage, other.storage) { difference |= left ^ right }
        return difference == 0
    }

    deinit {
        storage.withUnsafeMutableBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            // `memset` through a raw pointer is not removed as a dead store on a buffer that is being freed.
            _ = memset(base, 0, buffer.count)
        }
    }
}

extension SecretBytes: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Always `<redacted>`.
    public var description: String { "<redacted>" }
    /// Always `<redacted>`.
    public var debugDescription: String { "<redacted>" }
    /// An empty mirror, so `dump` shows nothing of the bytes.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// A value that holds a secret and must never be printed; conforming types get `<redacted>` descriptions.
public protocol RedactedDescription: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {}

extension RedactedDescription {
    /// Always `<redacted>`.
    public var description: String { "<redacted>" }
    /// Always `<redacted>`.
    public var debugDescription: String { "<redacted>" }
    /// An empty mirror, so `dump` shows nothing of the secret.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}
