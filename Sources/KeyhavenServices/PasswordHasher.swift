import Crypto
import Foundation
import HummingbirdBcrypt
import KeyhavenCore
import NIOCore
import NIOPosix
import Synchronization

/// Password hashing (SPEC §5): bcrypt at cost 12 or more, over the whole password, on a thread pool of its own.
///
/// bcrypt reads its input as a C string and stops at byte 72, so the password is first reduced to
/// base64(HMAC-SHA-256) — 44 ASCII bytes, no NUL — and every byte of it counts. Such hashes are stored as
/// `kh1:<bcrypt>`; older plain bcrypt hashes still verify (never for an empty password or one holding NUL) and
/// are replaced at the next successful login. The work runs on its own pool with a bounded queue, so a flood of
/// logins waits for itself (or is told to retry) instead of starving the database and DNS work that share
/// `NIOThreadPool.singleton`.
public final class PasswordHasher: Sendable {
    /// What checking a password found.
    public enum Verdict: Sendable, Equatable {
        /// Wrong password (or no account).
        case invalid
        /// Right password; `rehash` when the stored hash is of an older form and should be replaced.
        case valid(rehash: Bool)
    }

    static let prefix = "kh1:"
    let cost: UInt8
    private let pool: NIOThreadPool
    private let maximumWaiting: Int
    private let waiting = Atomic<Int>(0)
    private let decoy = Mutex<String?>(nil)

    /// Starts the pool.
    ///
    /// - Parameters:
    ///   - threads: threads that run bcrypt (half the cores by default).
    ///   - maximumWaiting: hashes queued or running before new ones are refused with 429.
    public init(cost: UInt8 = 12, threads: Int = max(1, System.coreCount / 2), maximumWaiting: Int = 64) {
        self.cost = max(12, cost)
        self.pool = NIOThreadPool(numberOfThreads: max(1, threads))
        self.maximumWaiting = max(1, maximumWaiting)
        pool.start()
    }

    /// Stops the pool.
    public func shutdown() async {
        try? await pool.shutdownGracefully()
    }

    deinit {
        // A hasher dropped without `shutdown()` still stops its threads.
        pool.shutdownGracefully { _ in }
    }

    /// The stored form of a new password.
    ///
    /// - Throws: `KeyhavenError.rateLimited` while too many hashes wait.
    public func hash(_ password: String) async throws -> String {
        let input = Self.prehash(password)
        let cost = self.cost
        return Self.prefix + (try await run { Bcrypt.hash(input, cost: cost) })
    }

    /// The stored form of `password`, computed on the calling thread (fixtures and tools; never on an event loop).
    public static func hashBlocking(_ password: String, cost: UInt8 = 12) -> String {
        prefix + Bcrypt.hash(prehash(password), cost: max(12, cost))
    }

    /// Checks `password` against a stored hash; with no hash (unknown account) a decoy is checked instead, so both
    /// paths take as long.
    ///
    /// - Throws: `KeyhavenError.rateLimited` while too many hashes wait.
    public func verify(_ password: String, against stored: String?) async throws -> Verdict {
        guard let stored else {
            let decoy = try await decoyHash()
            let input = Self.prehash(password)
            _ = try await run { Bcrypt.verify(input, hash: String(decoy.dropFirst(Self.prefix.count))) }
            return .invalid
        }
        if stored.hasPrefix(Self.prefix) {
            let input = Self.prehash(password)
            let hash = String(stored.dropFirst(Self.prefix.count))
            return try await run { Bcrypt.verify(input, hash: hash) } ? .valid(rehash: false) : .invalid
        }
        // A plain bcrypt hash from before: bcrypt would stop at a NUL, so such a password never matches one.
        guard !password.isEmpty, !password.utf8.contains(0) else { return .invalid }
        return try await run { Bcrypt.verify(password, hash: stored) } ? .valid(rehash: true) : .invalid
    }

    /// base64(HMAC-SHA-256(password)) under a fixed, versioned key: the whole password in 44 bytes without NUL.
    static func prehash(_ password: String) -> String {
        let key = SymmetricKey(data: Data("keyhaven password prehash v1".utf8))
        return Data(HMAC<SHA256>.authenticationCode(for: Data(password.utf8), using: key)).base64EncodedString()
    }

    private func decoyHash() async throws -> String {
        if let known = decoy.withLock({ $0 }) { return known }
        let made = try await hash(UUID().uuidString + UUID().uuidString)
        return decoy.withLock { stored in
            if stored == nil { stored = made }
            return stored ?? made
        }
    }

    private func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async throws -> T {
        let queued = waiting.wrappingAdd(1, ordering: .relaxed).newValue
        defer { waiting.wrappingSubtract(1, ordering: .relaxed) }
        guard queued <= maximumWaiting else { throw KeyhavenError.rateLimited(retryAfterSeconds: 1) }
        return try await pool.runIfActive(work)
    }
}
