import Logging
import NIOCore
import PostgresKit
import Synchronization

/// Deadlines of one length for many operations in flight (PostgreSQL queries; requests for a pooled connection).
///
/// One task watches them all, on the process's clock rather than with timers on the connections' event loops, which
/// fire late when those threads are busy, and without a task started and cancelled for each operation.
final class Deadlines: Sendable {
    /// How long an operation may take.
    let limit: Duration
    let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var running: [Int: (started: ContinuousClock.Instant, overdue: @Sendable () -> Void)] = [:]
        var last = 0
        var watcher: Task<Void, Never>?
    }

    init(limit: Duration, logger: Logger) {
        self.limit = limit
        self.logger = logger
        let watcher = Task { [weak self] in
            // Every operation has the same limit, so one that starts while the watcher sleeps is due after it wakes.
            while let due = self?.nextDue() {
                do {
                    try await Task.sleep(until: due, clock: .continuous)
                } catch {
                    return
                }
                self?.runOverdue()
            }
        }
        state.withLock { $0.watcher = watcher }
    }

    /// Starts watching an operation: unless ``end(_:)`` is called with the returned id within ``limit``, `overdue`
    /// runs, once, on the watcher.
    func start(overdue: @escaping @Sendable () -> Void) -> Int {
        state.withLock { state in
            state.last &+= 1
            state.running[state.last] = (.now, overdue)
            return state.last
        }
    }

    /// Stops watching operation `id` (nothing if it was overdue already).
    func end(_ id: Int) {
        state.withLock { _ = $0.running.removeValue(forKey: id) }
    }

    /// Stops watching (the pool is closing).
    func stop() {
        state.withLock { $0.watcher }?.cancel()
    }

    /// When the oldest operation in flight is due, or one limit from now if none is.
    private func nextDue() -> ContinuousClock.Instant {
        let oldest = state.withLock { $0.running.values.map(\.started).min() }
        return (oldest ?? .now) + limit
    }

    private func runOverdue() {
        let now = ContinuousClock.now
        let overdue = state.withLock { state in
            let overdue = state.running.filter { now - $0.value.started >= limit }
            for id in overdue.keys { state.running[id] = nil }
            return overdue.values.map(\.overdue)
        }
        for action in overdue { action() }
    }
}

extension Deadlines {
    /// Runs `query` on `connection` under the client's own deadline for each PostgreSQL query: a query that has not
    /// answered within ``limit`` has its connection closed, which fails the query (503) and makes the pool discard
    /// the connection, whose place in the protocol is unknown.
    ///
    /// The server's `statement_timeout` ends a slow query, but a server that no longer answers at all (its
    /// processes stopped, its host frozen, the network dropping packets) sends nothing, and PostgresNIO would wait
    /// for it as long as the TCP connection lives.
    ///
    /// - Throws: what `query` throws; past the deadline, the driver's error for the closed connection.
    func watch(_ connection: PostgresConnection, _ query: () async throws -> Void) async throws {
        let (limit, logger) = (limit, logger)
        let id = start {
            logger.error(
                "a PostgreSQL query did not answer within its deadline; its connection is closed",
                metadata: ["deadline": "\(limit)"])
            let _: EventLoopFuture<Void> = connection.close()
        }
        defer { end(id) }
        try await query()
    }
}
