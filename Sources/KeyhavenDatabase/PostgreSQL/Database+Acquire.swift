import AsyncKit
import KeyhavenCore
import Logging
import NIOCore
import Synchronization

extension Database {
    /// A pooled connection, within ``connectTimeout`` of asking.
    ///
    /// The driver's connect timeout and the pool's wait are timers on the pool's event loops, which fire late when
    /// those threads are busy or stalled; the pool's own wait adds to the driver's. The deadline here is the
    /// process's clock instead, raced against the whole request, so the configured timeout bounds what a caller
    /// waits, whatever holds the connection up. A connection that arrives after the deadline goes back to the pool.
    func acquire<Source>(_ pool: EventLoopGroupConnectionPool<Source>) async throws -> Source.Connection
    where Source.Connection: Sendable {
        let requested = pool.requestConnection(logger: logger)
        let timeout = connectTimeout
        guard let deadlines = deadlines?.connections else { return try await requested.get() }
        // Whichever comes first answers; a connection that comes second goes back to the pool. A task group would
        // not do: it waits for every child, and a future's `get()` cannot be cancelled.
        let answered = FirstAnswer()
        do {
            return try await withCheckedThrowingContinuation { continuation in
                let watched = deadlines.start {
                    if answered.claim() { continuation.resume(throwing: ConnectTimeout(timeout: timeout)) }
                }
                requested.whenComplete { result in
                    deadlines.end(watched)
                    if answered.claim() {
                        continuation.resume(with: result)
                    } else if case .success(let connection) = result {
                        pool.releaseConnection(connection)
                    }
                }
            }
        } catch {
            logger.error("database connection failed", metadata: ["error": "\(error)"])
            throw KeyhavenError.unavailable("The database is unavailable.")
        }
    }

    /// Which of two racing outcomes came first.
    private final class FirstAnswer: Sendable {
        private let answered = Mutex(false)
        /// True for the first caller only.
        func claim() -> Bool {
            answered.withLock { done in
                defer { done = true }
                return !done
            }
        }
    }

    /// No connection within the configured time.
    struct ConnectTimeout: Error, CustomStringConvertible {
        let timeout: Duration
        var description: String { "no connection within the connect timeout (\(timeout))" }
    }
}
