import Crypto
import Foundation
import KeyhavenCore
import Logging
import NIOCore
import PostgresKit
import SQLKit
import Synchronization

/// One PostgreSQL connection as SQLKit's `SQLDatabase`, running each short query as a named prepared statement.
///
/// PostgreSQL plans an unnamed statement every time it runs, and for the queries on every request (a token's
/// lookup, an integration by id) the plan costs several times the execution: 0.25 ms against 0.08 ms for the token
/// lookup with `pgbench` here. A named statement is planned once per connection: PostgresNIO prepares it on first
/// use and keeps it for the connection's life. The name is derived from the SQL text, so each distinct text is one
/// statement per connection.
///
/// Only queries with a few binds are prepared (lists of ids vary in length, so each length would be another
/// statement kept for the connection's life), and only binds PostgresNIO encodes itself, exactly as PostgresKit
/// would; anything else, and a statement whose cached plan the server refuses (a table changed under it), runs
/// unprepared as before.
struct PostgresPreparedDatabase: SQLDatabase {
    let connection: PostgresConnection
    /// The same connection through PostgresKit, for what is not prepared.
    let plain: any SQLDatabase
    /// The deadline each query runs under; nil for long work, which has none.
    let deadlines: Deadlines?

    /// The most binds a prepared query has; longer `IN (…)` lists run unprepared.
    static let maximumBinds = 16
    /// The longest SQL text prepared.
    static let maximumLength = 2048

    init(connection: PostgresConnection, deadlines: Deadlines?) {
        self.connection = connection
        self.deadlines = deadlines
        // Queries are never logged: their binds may hold ciphertexts and hashes.
        plain = connection.sql(queryLogLevel: nil)
    }

    var logger: Logger { plain.logger }
    var eventLoop: any EventLoop { plain.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { plain.version }
    var dialect: any SQLDialect { plain.dialect }
    var queryLogLevel: Logger.Level? { nil }

    func execute(
        sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void
    ) -> EventLoopFuture<Void> {
        // The check and the write in one turn of the connection's loop: see `execute(sql:_:) async`.
        eventLoop.flatSubmit { [self] in
            guard !connection.isClosed else { return eventLoop.makeFailedFuture(ConnectionClosed()) }
            return plain.execute(sql: query, onRow)
        }
    }

    /// Runs `query`, prepared where it can be, under ``deadlines`` (SQLKit's async API, which every store uses,
    /// calls this).
    ///
    /// PostgresNIO hands a query to the connection's channel without watching the hand-over: a query written after
    /// the channel closed and shed its handlers (the server went away) is dropped, and its caller waits forever.
    /// So a query is written only on the connection's event loop, right after checking there that the channel is
    /// open: within that one turn of the loop it cannot close, and an open channel passes the query to PostgresNIO's
    /// handler, which fails it if the server has gone. Off the loop (a long body) the query is handed to the loop to
    /// do the same, unprepared.
    ///
    /// - Throws: `ConnectionClosed` if the connection had closed; what PostgresNIO throws.
    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        guard let deadlines else { return try await run(query, onRow) }
        try await deadlines.watch(connection) { try await run(query, onRow) }
    }

    private func run(_ query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        guard eventLoop.inEventLoop else { return try await execute(sql: query, onRow).get() }
        guard !connection.isClosed else { throw ConnectionClosed() }
        let (sql, binds) = serialize(query)
        // Statements without binds (BEGIN, COMMIT, DDL) gain nothing from a plan kept for them.
        guard !binds.isEmpty, binds.count <= Self.maximumBinds, sql.utf8.count <= Self.maximumLength,
            let (bindings, types) = Self.bindings(binds)
        else {
            return try await plain.execute(sql: query, onRow)
        }
        do {
            try await PreparedQuery.$shape.withValue(PreparedQuery.Shape(text: sql, types: types)) {
                for try await row in try await connection.execute(PreparedQuery(bindings: bindings), logger: logger) {
                    onRow(row.sql())
                }
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "0A000" {
            // "cached plan must not change result type": a table the statement reads changed after it was
            // prepared on this connection (a migration). Unprepared, the query sees the table as it is now; inside
            // a transaction the error has aborted it, and the retry reports that instead.
            try await execute(sql: query, onRow).get()
        }
    }

    /// The binds in PostgreSQL's binary encoding with their types (unspecified for a NULL, as PostgresNIO sends
    /// them), or nil if one of them is not a type PostgresNIO encodes itself.
    private static func bindings(_ binds: [any Encodable & Sendable]) -> (PostgresBindings, [PostgresDataType])? {
        var bindings = PostgresBindings(capacity: binds.count)
        var types: [PostgresDataType] = []
        for bind in binds {
            // The cast looks through an optional that holds a value.
            if let value = bind as? any PostgresThrowingDynamicTypeEncodable {
                guard (try? bindings.append(value, context: .default)) != nil else { return nil }
                types.append(value.psqlType)
            } else if (bind as? any NullableBind)?.isNull == true {
                bindings.appendNull()
                types.append(.null)
            } else {
                return nil
            }
        }
        return (bindings, types)
    }
}

/// A query refused because its connection had closed: the server went away or was restarted.
struct ConnectionClosed: Error, CustomStringConvertible {
    var description: String { "the connection to PostgreSQL has closed" }
}

/// An optional passed as `any Encodable`: whether it holds nothing (the cast to an encodable type above looks
/// through one that holds a value).
private protocol NullableBind {
    var isNull: Bool { get }
}

extension Optional: NullableBind {
    var isNull: Bool { self == nil }
}

/// The statement PostgresNIO prepares: its text and parameter types are the caller's, passed through a task-local
/// because PostgresNIO asks for them as static properties, and read only while the caller's `execute` runs.
private struct PreparedQuery: PostgresPreparedStatement {
    struct Shape: Sendable {
        var text = ""
        /// Declared when the statement is prepared, as for an unnamed one: a value is read as the type it was
        /// encoded as (an `Int` as int8 also against an integer column), never as a type the server guessed.
        var types: [PostgresDataType] = []
    }

    @TaskLocal static var shape = Shape()

    static var sql: String { shape.text }
    static var bindingDataTypes: [PostgresDataType] { shape.types }
    /// `kh_` and the first 128 bits of the SHA-256 of the text and the types: one statement per text and types.
    static var name: String {
        var hash = SHA256()
        hash.update(data: Data(shape.text.utf8))
        for type in shape.types { hash.update(data: Data("|\(type.rawValue)".utf8)) }
        return "kh_" + Hex.encode(hash.finalize().prefix(16))
    }

    let bindings: PostgresBindings

    func makeBindings() throws -> PostgresBindings { bindings }
    func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
}

/// A connection's event loop as a task executor: a task that prefers it runs its queries' callbacks and the code
/// between them on that one thread, with no hop to Swift's shared threads and back at every round trip. The loops
/// are those of the process-wide group, which is never shut down, so a job is never refused.
package final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    /// One executor per event loop of the shared group, made once.
    package static func of(_ eventLoop: any EventLoop) -> EventLoopTaskExecutor {
        let key = ObjectIdentifier(eventLoop)
        return executors.withLock { executors in
            if let existing = executors[key] { return existing }
            let made = EventLoopTaskExecutor(eventLoop)
            executors[key] = made
            return made
        }
    }

    private static let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])
}
