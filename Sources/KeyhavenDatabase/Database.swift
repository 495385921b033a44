import AsyncKit
import Foundation
import KeyhavenCore
import Logging
import NIOCore
import NIOPosix
import PostgresKit
import SQLKit

/// A pool of connections to SQLite or PostgreSQL, with transactions that work the same on both.
///
/// Stores receive an `SQLDatabase` from ``withConnection(_:)`` (reads) or ``transaction(_:)`` (everything that
/// writes) and build parameterised SQL with SQLKit; this type owns the connections and the dialect differences
/// that SQL cannot hide.
///
/// On SQLite, reads and writes use different connections (``SQLiteConnections``): readers are opened `query_only`,
/// so a write outside ``transaction(_:)`` fails at once instead of waiting for SQLite's write lock; a read runs on
/// the thread that asks for it; writers queue in-process, run on the writer's own thread and commit in groups
/// (``SQLiteWriteGroups``). A writer therefore never waits for a thread that a reader (or another writer waiting
/// for the lock) is holding.
public final class Database: Sendable {
    /// Which dialect the database speaks.
    public let kind: DatabaseKind
    /// Where the database is (printable: no password).
    public let location: DatabaseLocation
    let logger: Logger
    private let pool: Pool
    /// How long a request may wait for a PostgreSQL connection, a new one's handshake included.
    let connectTimeout: Duration
    /// PostgreSQL's deadlines: the client's own for each query (``Deadlines/watch(_:_:)``) and for each request for a
    /// connection (``acquire(_:)``); nil on SQLite.
    let deadlines: (queries: Deadlines, connections: Deadlines)?
    /// One decoder for the JSON columns the stores read with `Decodable` (a decoder is safe to share: each call
    /// decodes with its own state), instead of one made per row.
    public static let jsonDecoder = JSONDecoder()

    /// Where the writer's time goes, and what its commits hold (SQLite; the credential reads' phases on both).
    public let timings: WriterTimings

    // EventLoopGroupConnectionPool guards its state with a lock and per-loop pools; it predates Sendable.
    private enum Pool: @unchecked Sendable {
        /// Read-only connections used where they are called, and the writer on its own thread, in groups.
        case sqlite(SQLiteWriteGroups)
        case postgres(EventLoopGroupConnectionPool<PostgresConnectionSource>)
    }

    /// Opens a pool to `location`. For SQLite the file and its folder are created if missing.
    ///
    /// - Parameters:
    ///   - searchPath: PostgreSQL schemas to use instead of `public` (tests use one schema each).
    ///   - connectTimeout: how long, in whole seconds, a request may wait for a PostgreSQL connection, a new
    ///     connection's handshake included, before it fails (503); 10 s when nil. It bounds the whole wait, not only
    ///     the driver's part: see ``acquire(_:)``.
    ///   - statementTimeout: the longest a PostgreSQL statement may run (`statement_timeout`, sent when each
    ///     connection starts); 30 s when nil. A query that has not answered 1 s after it (a server that stopped
    ///     answering) has its connection closed (``Deadlines/watch(_:_:)``). Both fail the call as unavailable (503).
    ///   - lockTimeout: the longest a PostgreSQL statement may wait for a lock (`lock_timeout`); 10 s when nil.
    ///   - eventLoopGroup: the threads PostgreSQL connections run on (tests stall a group of their own).
    /// - Throws: `KeyhavenError.configuration` if the URL is invalid, `KeyhavenError.unavailable` if the first
    ///   connection cannot be made.
    public static func open(
        _ location: DatabaseLocation, searchPath: [String]? = nil, connectTimeout: Duration? = nil,
        statementTimeout: Duration? = nil, lockTimeout: Duration? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger
    ) async throws -> Database {
        let connectTimeout = connectTimeout ?? .seconds(10)
        let statementTimeout = statementTimeout ?? .seconds(30)
        let database: Database
        switch location {
        case .sqlite(let path):
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
                do {
                    try FileManager.default.createDirectory(
                        atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                } catch {
                    throw KeyhavenError.unavailable("cannot create the database folder \(directory)")
                }
            }
            // The file holds only ciphertexts, but no one else needs to read it; SQLite gives the -wal and -shm
            // files the same mode.
            if !FileManager.default.fileExists(atPath: path) {
                _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
            }
            restrictSQLiteFiles(path)
            let connections: SQLiteConnections
            let timings = WriterTimings()
            do {
                connections = try SQLiteConnections(path: path, timings: timings, logger: logger)
            } catch {
                logger.error("database connection failed", metadata: ["error": "\(error)"])
                throw KeyhavenError.unavailable("The database is unavailable.")
            }
            database = Database(
                kind: .sqlite, location: location, pool: .sqlite(SQLiteWriteGroups(connections: connections)),
                connectTimeout: connectTimeout, deadlines: nil, timings: timings, logger: logger)
        case .postgres(let url):
            var configuration: SQLPostgresConfiguration
            do {
                configuration = try SQLPostgresConfiguration(url: url)
            } catch {
                throw KeyhavenError.configuration("KEYHAVEN_DATABASE_URL is not a valid PostgreSQL URL")
            }
            configuration.searchPath = searchPath
            let timeout = TimeAmount.seconds(max(1, connectTimeout.components.seconds))
            // The driver's own connect timeout only ends attempts no caller waits for any more (``acquire(_:)``
            // answers at `connectTimeout`), so it is set well past that. A failed attempt fails the pool's promise
            // for the request it was made for even after that request has gone back into the queue (a closed
            // connection was handed to it), and the connection later made for its new place is then dropped, open,
            // with its slot in the pool (AsyncKit 1.22): a hung server whose queries are cut while connections to it
            // time out would leave the pool a slot short each time.
            configuration.coreConfiguration.options.connectTimeout = timeout * 3
            configuration.coreConfiguration.options.additionalStartupParameters = [
                ("statement_timeout", milliseconds(statementTimeout)),
                ("lock_timeout", milliseconds(lockTimeout ?? .seconds(10))),
            ]
            // The pool's own wait is set past the deadline ``acquire(_:)`` keeps and past the driver's attempt, so
            // neither a loaded machine's late timers nor an attempt still under way make it answer first.
            let pool = EventLoopGroupConnectionPool(
                source: PostgresConnectionSource(sqlConfiguration: configuration),
                maxConnectionsPerEventLoop: Self.connectionsPerEventLoop,
                requestTimeout: timeout * 3 + .seconds(1), logger: logger, on: eventLoopGroup)
            database = Database(
                kind: .postgres, location: location, pool: .postgres(pool), connectTimeout: connectTimeout,
                deadlines: (
                    queries: Deadlines(limit: statementTimeout + .seconds(1), logger: logger),
                    connections: Deadlines(limit: connectTimeout, logger: logger)
                ), logger: logger)
        }
        do {
            // The writer first: it puts a new file into WAL mode, which readers then share.
            try await database.transaction { sql in try await sql.raw("SELECT 1").run() }
            try await database.ping()
        } catch {
            if case .postgres = database.pool {
                // Closing the pool runs on its event loops, which may be what held the connection up: the caller
                // has its answer now, and the pool closes as soon as they can.
                Task { await database.shutdown() }
            } else {
                await database.shutdown()
            }
            throw error
        }
        // The first connection may have created the -wal and -shm files.
        location.sqlitePath.map(restrictSQLiteFiles)
        return database
    }

    private init(
        kind: DatabaseKind, location: DatabaseLocation, pool: Pool, connectTimeout: Duration,
        deadlines: (queries: Deadlines, connections: Deadlines)?, timings: WriterTimings = WriterTimings(),
        logger: Logger
    ) {
        self.kind = kind
        self.timings = timings
        self.location = location
        self.pool = pool
        self.connectTimeout = connectTimeout
        self.deadlines = deadlines
        self.logger = logger
    }

    /// PostgreSQL connections each event loop's pool may open. Eight: with four, twenty writers of one row (each
    /// holding its connection while it waits for the row's lock) outwaited the connect timeout under a full test
    /// run.
    static let connectionsPerEventLoop = 8

    /// A timeout as a PostgreSQL setting: whole milliseconds, from 1 (0 would turn it off) to about the largest the
    /// server takes (2^31 ms).
    private static func milliseconds(_ duration: Duration) -> String {
        "\(Int(min(max(duration, .milliseconds(1)), .seconds(2_000_000)) / .milliseconds(1)))ms"
    }

    /// Runs `body` on one pooled connection, without a transaction. On SQLite the connection is read-only: use
    /// ``transaction(_:)`` for anything that writes.
    ///
    /// - Parameter short: `body` is a few queries and little else (the paths every request takes). On PostgreSQL it
    ///   then runs on the connection's own event loop, so each round trip resumes it on that thread instead of
    ///   going through Swift's shared threads, and its queries run as prepared statements
    ///   (``PostgresPreparedDatabase``). A long body (a backup, a key rotation) must not, since that thread also
    ///   serves other connections; each of its queries is handed to the loop, unprepared.
    /// - Parameter long: `body` may rightly run for minutes (a backup, a restore, a key rotation, migrations). On
    ///   PostgreSQL it then runs without the statement and lock timeouts and without the client's query deadline
    ///   (``Deadlines/watch(_:_:)``); `short` does not apply. Nothing changes on SQLite.
    /// - Throws: what `body` throws; a failure to reach the database becomes `KeyhavenError.unavailable`.
    public func withConnection<T: Sendable>(
        short: Bool = false, long: Bool = false, _ body: (any SQLDatabase) async throws -> T
    ) async throws -> T {
        switch pool {
        case .sqlite(let groups):
            return try await mapErrors { try await groups.connections.withReader(body) }
        case .postgres(let pool):
            let connection = try await acquire(pool)
            defer { pool.releaseConnection(connection) }
            let sql = PostgresPreparedDatabase(connection: connection, deadlines: long ? nil : deadlines?.queries)
            func run() async throws -> T {
                try await mapErrors { try await body(sql) }
            }
            if long { return try await withoutTimeouts(sql, run) }
            guard short else { return try await run() }
            return try await withTaskExecutorPreference(EventLoopTaskExecutor.of(connection.eventLoop)) {
                // Onto the loop now: the body's first query is then written there, prepared, as the others are.
                if !connection.eventLoop.inEventLoop { try? await connection.eventLoop.submit {}.get() }
                return try await run()
            }
        }
    }

    /// Runs `body` in one transaction: committed if it returns, rolled back if it throws.
    ///
    /// On SQLite writers queue for the one writer and commit in groups (``SQLiteWriteGroups``): the call returns once
    /// the commit holding its work is durable, and a body that throws leaves nothing of its own behind.
    /// - Parameters:
    ///   - short: as for ``withConnection(short:long:_:)``.
    ///   - long: as for ``withConnection(short:long:_:)``.
    /// - Throws: what `body` throws; a failure to reach the database becomes `KeyhavenError.unavailable`.
    public func transaction<T: Sendable>(
        short: Bool = false, long: Bool = false, _ body: (any SQLDatabase) async throws -> T
    ) async throws -> T {
        switch pool {
        case .sqlite(let groups):
            return try await mapErrors { try await groups.transaction(body) }
        case .postgres:
            return try await withConnection(short: short, long: long) { sql in
                try await Self.transaction(begin: "BEGIN", on: sql, body)
            }
        }
    }

    /// On SQLite, turns the writer's foreign-key enforcement on or off (for migrations); nothing on PostgreSQL.
    ///
    /// - Throws: a failure to reach the database becomes `KeyhavenError.unavailable`.
    func setSQLiteForeignKeys(enabled: Bool) async throws {
        guard case .sqlite(let groups) = pool else { return }
        try await mapErrors { try await groups.outsideTransaction("PRAGMA foreign_keys = \(enabled ? "ON" : "OFF")") }
    }

    /// On SQLite, copies every committed page from the write-ahead log into the database file and empties the log,
    /// so what was deleted (with `secure_delete`) survives in neither file; nothing on PostgreSQL. Readers in the
    /// middle of a transaction keep older pages, so run it when none are.
    ///
    /// - Returns: whether the log was emptied (false: a reader held older pages).
    /// - Throws: a failure to reach the database becomes `KeyhavenError.unavailable`.
    @discardableResult
    public func checkpointSQLiteLog() async throws -> Bool {
        guard case .sqlite(let groups) = pool else { return true }
        return try await mapErrors { try await groups.checkpoint() }
    }

    /// After a transaction that destroyed secret versions (or retired a key) committed: on SQLite, empties the
    /// write-ahead log, where the old pages with their ciphertexts and wrapped keys would otherwise stay readable
    /// until overwritten; the database file's copies were overwritten by `secure_delete`. The writer does not wait
    /// for readers still on older pages: while one is, the log is emptied in the background, every half second for
    /// up to a minute, and a log line says so if a reader (a backup) outlasts that. Never fails the caller, whose
    /// change is committed.
    public func eraseDestroyedFromLog() async {
        guard kind == .sqlite else { return }
        if await emptyLog() { return }
        Task { [self] in
            for _ in 0..<120 {
                try? await Task.sleep(for: .milliseconds(500))
                if await emptyLog() { return }
            }
            logger.warning("the database log still holds destroyed secrets: a reader stayed in one transaction")
        }
    }

    private func emptyLog() async -> Bool {
        do {
            return try await checkpointSQLiteLog()
        } catch {
            logger.warning("the database log could not be emptied", metadata: ["error": "\(error)"])
            return true
        }
    }

    /// On SQLite, how many write transactions ran and in how many commits; nil on PostgreSQL.
    public var writeStatistics: WriteStatistics? {
        guard case .sqlite(let groups) = pool else { return nil }
        return groups.statistics
    }

    /// On SQLite, the cached statements SQLite prepared again, with how many times; nil on PostgreSQL. For tests,
    /// while nothing reads or writes.
    var repreparedStatements: [String: Int]? {
        guard case .sqlite(let groups) = pool else { return nil }
        return groups.connections.reprepared
    }

    /// Runs `body` between `begin` and `COMMIT` on `sql`, rolling back if it throws.
    private static func transaction<T: Sendable>(
        begin: String, on sql: any SQLDatabase, _ body: (any SQLDatabase) async throws -> T
    ) async throws -> T {
        try await sql.raw(SQLQueryString(begin)).run()
        do {
            let result = try await body(sql)
            try await sql.raw("COMMIT").run()
            return result
        } catch {
            try? await sql.raw("ROLLBACK").run()
            throw error
        }
    }

    /// Runs `body` with PostgreSQL's statement and lock timeouts off for `sql`'s session, then sets them back to the
    /// connection's own (its startup parameters). A connection they cannot be set back on is closed, so the pool
    /// never hands it out without them.
    private func withoutTimeouts<T>(
        _ sql: PostgresPreparedDatabase, _ body: () async throws -> T
    ) async throws -> T {
        try await mapErrors {
            try await sql.raw(
                "SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false)"
            ).run()
        }
        let result: Result<T, any Error>
        do {
            result = .success(try await body())
        } catch {
            result = .failure(error)
        }
        do {
            try await sql.raw("RESET statement_timeout").run()
            try await sql.raw("RESET lock_timeout").run()
        } catch {
            try? await sql.connection.close().get()
        }
        return try result.get()
    }

    /// Runs `body` in one read-only transaction that sees a single consistent snapshot of every table: a deferred
    /// read transaction on an SQLite reader (WAL keeps the snapshot while writers go on), or `REPEATABLE READ READ
    /// ONLY` on PostgreSQL. Writers are never blocked by it.
    ///
    /// - Parameter long: as for ``withConnection(short:long:_:)`` (a backup).
    /// - Throws: what `body` throws; a failure to reach the database becomes `KeyhavenError.unavailable`.
    public func readSnapshot<T: Sendable>(
        long: Bool = false, _ body: (any SQLDatabase) async throws -> T
    ) async throws -> T {
        try await withConnection(long: long) { sql in
            try await Self.transaction(
                begin: kind == .sqlite ? "BEGIN" : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", on: sql, body)
        }
    }

    /// Checks that the database answers.
    ///
    /// - Throws: `KeyhavenError.unavailable` if it does not.
    public func ping() async throws {
        try await withConnection { sql in try await sql.raw("SELECT 1").run() }
    }

    /// Checks that the database takes a write: one small write transaction (the readiness row), which a full disk,
    /// a file that cannot grow or a read-only file or server fails, where a query still answers.
    ///
    /// - Throws: `KeyhavenError.unavailable` if it does not.
    public func checkWritable() async throws {
        try await transaction { sql in
            try await sql.raw("UPDATE readiness_probe SET written_at = \(bind: Date()) WHERE id = 1").run()
        }
    }

    /// Closes every connection.
    public func shutdown() async {
        switch pool {
        case .sqlite(let groups):
            // A write still running (a background job at shutdown) finishes first; those queued behind it then
            // find the database closed.
            await groups.close()
        case .postgres(let pool):
            deadlines?.queries.stop()
            deadlines?.connections.stop()
            try? await pool.shutdownAsync()
        }
    }

    /// Turns the driver's failures to reach or use the database into `KeyhavenError.unavailable` (503, logged here,
    /// since driver errors may quote SQL); every other error, a domain error or a bug, goes through unchanged, so a
    /// bug shows as a 500 with its cause logged instead of as an outage.
    private func mapErrors<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error where Self.isUnavailable(error) {
            logger.error("database query failed", metadata: ["error": "\(error)"])
            throw KeyhavenError.unavailable("The database is unavailable.")
        }
    }

    /// Whether `error` says the database cannot be reached or cannot take the work now (gone, busy, full,
    /// read-only, timed out, shutting down), rather than that the query itself was wrong.
    static func isUnavailable(_ error: any Error) -> Bool {
        switch error {
        case let error as PSQLError:
            guard error.code == .server else { return error.code != .tooManyParameters }
            // SQLSTATE classes: 08 connection, 40 rollback (serialization, deadlock), 53 resources, 57 operator
            // intervention (statement timeout, shutdown), 58 system; 55P03 a lock timeout.
            let state = error.serverInfo?[.sqlState] ?? ""
            return ["08", "40", "53", "57", "58"].contains(String(state.prefix(2))) || state == "55P03"
        case let error as SQLiteFailure:
            // The primary result code: BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOLFS,
            // NOTADB; and the connection being closed (MISUSE after close).
            return [5, 6, 7, 8, 10, 11, 13, 14, 15, 21, 22, 26].contains(error.code & 0xFF)
        case is ConnectionPoolError, is ConnectionPoolTimeoutError, is ChannelError, is IOError, is ConnectTimeout,
            is ConnectionClosed, is PostgresError:
            return true
        default:
            return false
        }
    }
}

/// Makes an SQLite database file and its `-wal` and `-shm` companions readable by their owner only (0600), whatever
/// mode an older version or another tool left them with.
func restrictSQLiteFiles(_ path: String) {
    for file in [path, path + "-wal", path + "-shm"] where FileManager.default.fileExists(atPath: file) {
        try? FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file)
    }
}
