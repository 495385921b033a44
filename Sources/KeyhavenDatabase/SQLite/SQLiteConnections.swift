import Foundation
import Logging
import NIOCore
import NIOPosix
import SQLKit
import SQLiteKit
import Synchronization

/// SQLite's connections: readers, taken by whichever task reads and run on its own thread, and the one writer, whose
/// transactions run on a thread of their own.
///
/// A read in WAL mode never waits for a lock, so it runs where it is called, like any other short computation: no
/// thread hop, no future. A write may wait (for the fsync of its commit, or for another process's lock), so a
/// transaction runs on the writer's thread (``SQLiteWriterExecutor``) and never blocks the threads that serve
/// requests, and the readers never hold a thread the writer needs.
final class SQLiteConnections: Sendable {
    let path: String
    let logger: Logger
    /// The writer's thread: transactions prefer it, so their queries run there.
    private let writerExecutor: SQLiteWriterExecutor
    private let writer: SQLiteFileConnection
    private let idleReaders = Mutex<[SQLiteFileConnection]>([])
    private let closed = Atomic<Bool>(false)
    /// The log's checkpoints run on this connection and thread, never inside a commit.
    private let checkpointer: SQLiteFileConnection
    private let checkpointThread: NIOThreadPool
    /// A checkpoint is queued or running.
    private let checkpointing = Atomic<Bool>(false)
    let timings: WriterTimings

    /// Readers kept open between reads; more are opened while more reads run at once, and closed when done.
    static let idleReaderLimit = 8
    /// The log's size, in frames, from which a commit asks for a checkpoint (SQLite's own default threshold).
    static let checkpointThreshold: Int32 = 1000

    /// Opens the writer (which puts a new file into WAL mode), the checkpointer and one reader.
    init(path: String, timings: WriterTimings, logger: Logger) throws {
        self.path = path
        self.logger = logger
        self.timings = timings
        writer = try SQLiteFileConnection(path: path, role: .writer)
        let reader: SQLiteFileConnection
        do {
            reader = try SQLiteFileConnection(path: path, role: .reader)
        } catch {
            writer.close()
            throw error
        }
        do {
            checkpointer = try SQLiteFileConnection(path: path, role: .checkpointer)
        } catch {
            reader.close()
            writer.close()
            throw error
        }
        idleReaders.withLock { $0.append(reader) }
        writerExecutor = SQLiteWriterExecutor()
        checkpointThread = NIOThreadPool(numberOfThreads: 1)
        checkpointThread.start()
    }

    /// After a commit, on the writer's thread: records the log's counts and, once the log holds
    /// ``checkpointThreshold`` frames, has the checkpointer copy them into the database file on its own thread, so
    /// no commit waits for a checkpoint (the commit's own writers have their answer before this runs). A checkpoint
    /// never blocks the writer or readers (it is passive); one that could not copy everything is tried again after a
    /// later commit.
    func committed() {
        let counts = writer.walCounts
        timings.setWAL(commits: Int(counts.commits), frames: Int(counts.frames))
        if counts.pages >= Self.checkpointThreshold * 4 {
            // Under sustained writes a checkpoint beside the writer never finds the log wholly copied before the
            // next commit, so the log would never start over and would grow without bound. Past four times the
            // threshold the writer copies it itself, between commits (as SQLite's own checkpoint does), and the
            // next write starts the log over.
            do {
                try timings.measure(.checkpoint) { try writer.checkpoint() }
            } catch {
                logger.warning("a checkpoint of the database log failed", metadata: ["error": "\(error)"])
            }
            return
        }
        guard counts.pages >= Self.checkpointThreshold,
            !closed.load(ordering: .relaxed),
            !checkpointing.exchange(true, ordering: .acquiring)
        else { return }
        checkpointThread.submit { [self] state in
            defer { checkpointing.store(false, ordering: .releasing) }
            guard case .active = state, !closed.load(ordering: .relaxed) else { return }
            do {
                try timings.measure(.checkpoint) { try checkpointer.checkpoint() }
            } catch {
                logger.warning("a checkpoint of the database log failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Runs `body` with a reader of its own.
    func withReader<T>(_ body: (any SQLDatabase) async throws -> T) async throws -> T {
        guard !closed.load(ordering: .relaxed) else { throw SQLiteFailure(code: 21, message: "the database is closed") }
        let reader = try idleReaders.withLock { $0.popLast() } ?? SQLiteFileConnection(path: path, role: .reader)
        defer {
            let kept = idleReaders.withLock { idle in
                guard !closed.load(ordering: .relaxed), idle.count < Self.idleReaderLimit else { return false }
                idle.append(reader)
                return true
            }
            if !kept { reader.close() }
        }
        return try await body(SQLiteFileDatabase(connection: reader, logger: logger))
    }

    /// Runs `body` on the writer's thread: it and every task it resumes after a suspension run there.
    func onWriterThread<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try await withTaskExecutorPreference(writerExecutor, operation: body)
    }

    /// The writer, for the one task that holds it (``SQLiteWriteGroups``), on the writer's thread.
    ///
    /// - Throws: ``SQLiteFailure`` if the database is closed.
    func writerDatabase() throws -> SQLiteFileDatabase {
        guard !closed.load(ordering: .relaxed) else { throw SQLiteFailure(code: 21, message: "the database is closed") }
        return SQLiteFileDatabase(connection: writer, logger: logger)
    }

    /// The cached statements prepared again, on the writer and the idle readers, with how many times. Call it only
    /// while nothing reads or writes.
    var reprepared: [String: Int] {
        idleReaders.withLock { $0 }.reduce(writer.reprepared) { $0.merging($1.reprepared, uniquingKeysWith: +) }
    }

    /// Closes every connection; later calls fail. The caller makes sure no write is running: the writer is closed
    /// at once. A reader in use is closed when its read ends.
    func close() {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        for reader in idleReaders.withLock({ idle in
            defer { idle.removeAll() }
            return idle
        }) { reader.close() }
        writer.close()
        writerExecutor.shutdown()
        // After a checkpoint under way, if any: the thread runs its jobs in order.
        checkpointThread.submit { [checkpointer] _ in checkpointer.close() }
        checkpointThread.shutdownGracefully { _ in }
    }
}

/// The thread SQLite's writer runs on: a task executor over one dedicated thread, so a transaction's queries run
/// one after another without hops, and its fsyncs and lock waits block only this thread.
final class SQLiteWriterExecutor: TaskExecutor, @unchecked Sendable {
    private let thread: NIOThreadPool

    init() {
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    /// Stops the thread once the jobs already queued have run.
    func shutdown() { thread.shutdownGracefully { _ in } }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        thread.submit { state in
            if case .active = state {
                job.runSynchronously(on: self.asUnownedTaskExecutor())
            } else {
                // Stopped (the database is closed): the shared pool runs what is left, never the enqueuing thread.
                globalConcurrentExecutor.enqueue(ExecutorJob(job))
            }
        }
    }
}

/// One SQLite connection as SQLKit's `SQLDatabase`: queries run synchronously on the calling thread.
struct SQLiteFileDatabase: SQLDatabase {
    let connection: SQLiteFileConnection
    let logger: Logger

    var eventLoop: any EventLoop { MultiThreadedEventLoopGroup.singleton.any() }
    var dialect: any SQLDialect { SQLiteDialect() }
    /// Queries are never logged: their binds may hold ciphertexts and hashes.
    var queryLogLevel: Logger.Level? { nil }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<
        Void
    > {
        do {
            try run(query, onRow)
            return eventLoop.makeSucceededVoidFuture()
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        try run(query, onRow)
    }

    private func run(_ query: any SQLExpression, _ onRow: (any SQLRow) -> Void) throws {
        let (sql, binds) = serialize(query)
        try connection.execute(sql, binds: binds) { onRow($0) }
    }
}
