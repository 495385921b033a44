import SQLKit
import Synchronization

/// SQLite's write transactions, committed in groups.
///
/// SQLite has one writer, and each commit waits for an fsync. Writers queue here, first come first served, without
/// holding a thread. The writer at the head runs its body; if others are waiting or on their way when it is done,
/// it leaves its work in the open transaction and passes the writer on, and the last writer of the group (no one
/// else coming, or ``maximumGroup`` reached) commits for all of them: one fsync for the group. Every writer returns
/// only after the commit that holds its work, so what it wrote is durable and visible to every reader when it
/// returns, as with a transaction of its own.
///
/// A body that joins an open group runs inside a savepoint: if it throws, only its own work is rolled back and the
/// others' stays. If the transaction itself is lost (a failed rollback to the savepoint, or a failed commit),
/// every writer of the group gets the error and nothing of the group is stored.
final class SQLiteWriteGroups: Sendable {
    private struct State {
        /// A writer holds the connection.
        var busy = false
        /// Writers waiting for the connection, oldest first.
        var waiting: [CheckedContinuation<Void, Never>] = []
        /// Writers on their way to the writer's thread (their turn to ask for the connection is queued there).
        var arriving = 0
        /// A transaction is open on the writer.
        var open = false
        /// Writers whose work is in the open transaction, waiting for its commit.
        var members: [CheckedContinuation<Void, any Error>] = []
        var statistics = WriteStatistics()
    }

    /// The most writers committed together; bounds how long the first of a group waits for its commit.
    static let maximumGroup = 64

    let connections: SQLiteConnections
    private let state = Mutex(State())

    init(connections: SQLiteConnections) {
        self.connections = connections
    }

    /// How many write transactions ran, how many commits stored them, and how many writers wait now.
    var statistics: WriteStatistics {
        state.withLock { state in
            var statistics = state.statistics
            statistics.waiting = state.waiting.count + state.arriving
            return statistics
        }
    }

    /// Runs `body` in a transaction of the next group; returns once that group is committed.
    ///
    /// Everything runs on the writer's thread, waiting for the writer included: a writer that passes it on resumes
    /// the next one right there, with no other thread in between.
    ///
    /// - Throws: what `body` throws (its work is then rolled back), or the error that lost the group's transaction.
    func transaction<T: Sendable>(_ body: (any SQLDatabase) async throws -> T) async throws -> T {
        // Counted before the hop: a writer that finds others on their way leaves the group open for them.
        state.withLock { $0.arriving += 1 }
        return try await connections.onWriterThread {
            await acquire(arriving: true)
            let sql: SQLiteFileDatabase
            do {
                sql = try connections.writerDatabase()
            } catch {
                release()
                throw error
            }
            let outcome = await run(body, on: sql)
            let othersWait = state.withLock { state in
                (!state.waiting.isEmpty || state.arriving > 0) && state.members.count + 1 < Self.maximumGroup
            }
            switch (othersWait, outcome) {
            case (true, .failure(let error)):
                release()
                throw error
            case (true, .success(let value)):
                // Leave the work in the open group and pass the writer on; the last of the group commits it.
                try await withCheckedThrowingContinuation { (member: CheckedContinuation<Void, any Error>) in
                    state.withLock { $0.members.append(member) }
                    release()
                }
                return value
            case (false, _):
                var result = outcome
                do {
                    try await commit(on: sql)
                } catch {
                    result = outcome.flatMap { _ in .failure(error) }
                }
                release()
                return try result.get()
            }
        }
    }

    /// Runs `statement` on the writer outside any transaction (a pragma SQLite ignores inside one), after
    /// committing the open group.
    ///
    /// - Throws: the statement's error.
    func outsideTransaction(_ statement: String) async throws {
        try await connections.onWriterThread {
            await acquire()
            defer { release() }
            let sql = try connections.writerDatabase()
            try await commit(on: sql)
            try await sql.raw(SQLQueryString(statement)).run()
        }
    }

    /// Commits the open group, then copies every committed page into the database file and empties the log
    /// (`wal_checkpoint(TRUNCATE)`); false when a reader still held older pages, so the log could not be emptied.
    /// It does not wait for such readers: every write queues behind the writer meanwhile.
    func checkpoint() async throws -> Bool {
        try await connections.onWriterThread {
            await acquire()
            defer { release() }
            let sql = try connections.writerDatabase()
            try await commit(on: sql)
            try await sql.raw("PRAGMA busy_timeout = 0").run()
            let row: (any SQLRow)?
            do {
                row = try await sql.raw("PRAGMA wal_checkpoint(TRUNCATE)").first()
            } catch {
                try await sql.raw("PRAGMA busy_timeout = 10000").run()
                throw error
            }
            try await sql.raw("PRAGMA busy_timeout = 10000").run()
            return try row?.decode(column: "busy", as: Int.self) == 0
        }
    }

    /// Commits the open group, then closes the connections; writers queued behind find the database closed.
    func close() async {
        _ = try? await connections.onWriterThread {
            await acquire()
            if let sql = try? connections.writerDatabase() { try? await commit(on: sql) }
            connections.close()
            release()
        }
    }

    /// Begins the transaction, or a savepoint in the open one, and runs `body` in it.
    private func run<T: Sendable>(
        _ body: (any SQLDatabase) async throws -> T, on sql: any SQLDatabase
    ) async -> Result<T, any Error> {
        let joining = state.withLock { state in
            state.statistics.transactions += 1
            return state.open
        }
        do {
            try await sql.raw(joining ? "SAVEPOINT keyhaven_write" : "BEGIN IMMEDIATE").run()
        } catch {
            if joining { await abandon(error, on: sql) }
            return .failure(error)
        }
        state.withLock { $0.open = true }
        do {
            let value = try await connections.timings.measure(.body) { try await body(sql) }
            if joining { try await sql.raw("RELEASE keyhaven_write").run() }
            return .success(value)
        } catch {
            if joining {
                do {
                    try await sql.raw("ROLLBACK TO keyhaven_write").run()
                    try await sql.raw("RELEASE keyhaven_write").run()
                } catch {
                    await abandon(error, on: sql)
                }
            } else {
                // The transaction holds nothing else.
                try? await sql.raw("ROLLBACK").run()
                state.withLock { $0.open = false }
            }
            return .failure(error)
        }
    }

    /// Commits the open transaction, if any, and tells its members.
    private func commit(on sql: any SQLDatabase) async throws {
        guard state.withLock({ $0.open }) else { return }
        let result: Result<Void, any Error>
        do {
            try await connections.timings.measure(.commit) { try await sql.raw("COMMIT").run() }
            result = .success(())
            state.withLock { $0.statistics.commits += 1 }
        } catch {
            try? await sql.raw("ROLLBACK").run()
            result = .failure(error)
        }
        endGroup(result)
        connections.committed()
        try result.get()
    }

    /// Rolls the whole transaction back and fails every member with `error`.
    private func abandon(_ error: any Error, on sql: any SQLDatabase) async {
        try? await sql.raw("ROLLBACK").run()
        endGroup(.failure(error))
    }

    /// Marks the transaction ended and tells every member how.
    private func endGroup(_ result: Result<Void, any Error>) {
        let members = state.withLock { state in
            state.open = false
            defer { state.members.removeAll() }
            return state.members
        }
        for member in members { member.resume(with: result) }
    }

    /// Waits until this caller holds the writer; `arriving` if it was counted as on its way.
    private func acquire(arriving: Bool = false) async {
        let free = state.withLock { state in
            if arriving { state.arriving -= 1 }
            guard !state.busy else { return false }
            state.busy = true
            return true
        }
        if free { return }
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let granted = state.withLock { state in
                guard state.busy else {
                    state.busy = true
                    return true
                }
                state.waiting.append(waiter)
                return false
            }
            if granted { waiter.resume() }
        }
    }

    /// Passes the writer to the oldest waiter, or frees it.
    private func release() {
        let next = state.withLock { state in
            guard !state.waiting.isEmpty else {
                state.busy = false
                return nil as CheckedContinuation<Void, Never>?
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}

/// How SQLite's writes were committed: ``transactions`` bodies in ``commits`` commits; ``waiting`` writers queued or
/// on their way now.
public struct WriteStatistics: Sendable, Equatable {
    /// Write transactions run (each body once, whether it committed or threw).
    public var transactions = 0
    /// Commits that stored them: one per group.
    public var commits = 0
    /// Writers queued for the writer or on their way to it now.
    public var waiting = 0

    /// No transactions, commits or writers waiting.
    public init() {}
}
