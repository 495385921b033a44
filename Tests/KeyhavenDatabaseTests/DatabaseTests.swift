import Foundation
import KeyhavenCore
import KeyhavenDatabase
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import NIOPosix
import SQLKit
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Database connections")
struct DatabaseTests {
    /// A domain error a store throws inside a transaction.
    struct DomainError: Error, Equatable {}

    @Test(
        """
        inside a transaction a domain error or a bug comes out \
        unchanged; only a database that cannot serve is unavailable
        """,
        arguments: TestDatabase.all)
    func errorsKeepTheirCause(kind: TestDatabase) async throws {
        let handle = try await kind.make()
        defer { Task { await handle.close() } }
        let database = handle.database
        await #expect(throws: DomainError()) {
            try await database.transaction { sql in
                try await insertUser("domain@example.test", on: sql)
                throw DomainError()
            }
        }
        // The transaction was rolled back all the same.
        let count = try await database.withConnection { sql in
            try await sql.raw("SELECT COUNT(*) AS n FROM users").first()?.decode(column: "n", as: Int.self)
        }
        #expect(count == 0)
        // A query that breaks a constraint is a bug of the caller's, not an outage.
        try await database.transaction { sql in try await insertUser("twice@example.test", on: sql) }
        do {
            try await database.transaction { sql in
                try await sql.raw("INSERT INTO users (id, email, created_at) SELECT id, email, created_at FROM users")
                    .run()
            }
            Issue.record("a duplicate key was accepted")
        } catch {
            #expect(!(error is KeyhavenError), "\(error)")
        }
        // A row that does not decode is a bug too.
        do {
            _ = try await database.withConnection { sql in
                try await sql.raw("SELECT email FROM users").first()?.decode(column: "email", as: UUID.self)
            }
            Issue.record("an email decoded as a UUID")
        } catch {
            #expect(!(error is KeyhavenError), "\(error)")
        }
        // A database that is gone is unavailable.
        await handle.close()
        await #expect(throws: KeyhavenError.unavailable("The database is unavailable.")) { try await database.ping() }
    }

    @Test(
        "on SQLite a write outside a transaction is refused at once, and readers go on while the writer holds the lock")
    func writesQueue() async throws {
        let handle = try await TestDatabase.sqlite.make()
        defer { Task { await handle.close() } }
        let database = handle.database
        // The read path cannot write: such a write would wait for SQLite's lock on a thread the writer needs.
        let start = ContinuousClock.now
        await #expect(throws: KeyhavenError.self) {
            try await database.withConnection { sql in
                try await insertUser("x@example.test", on: sql)
            }
        }
        #expect(start.duration(to: .now) < .seconds(10), "refused, not queued behind the 10 s busy timeout")
        // While the writer is inside its transaction, readers on every pooled connection still answer.
        try await database.transaction { sql in
            try await insertUser("w@example.test", on: sql)
            let counts = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        try await database.withConnection { reader in
                            try await reader.raw("SELECT COUNT(*) AS n FROM users").first()?.decode(
                                column: "n", as: Int.self) ?? -1
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // Readers see the last committed state, not the open transaction.
            #expect(counts == Array(repeating: 0, count: 8))
        }
        let committed = try await database.withConnection { sql in
            try await sql.raw("SELECT COUNT(*) AS n FROM users").first()?.decode(column: "n", as: Int.self)
        }
        #expect(committed == 1)
    }

    @Test(
        """
        on SQLite, concurrent writes commit in groups; each is durable and \
        visible when it returns, and one that throws leaves only its own work out
        """
    )
    func groupCommit() async throws {
        let handle = try await TestDatabase.sqlite.make()
        defer { Task { await handle.close() } }
        let database = handle.database
        let before = try #require(database.writeStatistics)
        struct Refused: Error {}
        let results = await withTaskGroup(of: (Int, Bool).self) { group in
            for index in 0..<40 {
                group.addTask {
                    let email = "w\(index)@example.test"
                    do {
                        try await database.transaction { sql in
                            try await insertUser(email, on: sql)
                            // Hold the writer a little, so the others queue behind it.
                            try await Task.sleep(for: .milliseconds(2))
                            if index % 5 == 0 { throw Refused() }
                        }
                    } catch {
                        return (index, false)
                    }
                    // Committed when the call returns: a reader on another connection sees it.
                    let seen = try? await database.withConnection { sql in
                        try await sql.raw("SELECT COUNT(*) AS n FROM users WHERE email = \(bind: email)").first()?
                            .decode(column: "n", as: Int.self)
                    }
                    return (index, seen == 1)
                }
            }
            return await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        for index in 0..<40 { #expect(results[index] == (index % 5 != 0), "write \(index)") }
        let emails = try await database.withConnection { sql in
            try await sql.raw("SELECT email FROM users").all().map { try $0.decode(column: "email", as: String.self) }
        }
        #expect(Set(emails) == Set((0..<40).filter { $0 % 5 != 0 }.map { "w\($0)@example.test" }))
        let after = try #require(database.writeStatistics)
        #expect(after.transactions - before.transactions == 40)
        #expect(after.commits - before.commits < 40, "the writes shared commits")
    }

    @Test(
        """
        on SQLite, every commit is counted with the log frames it wrote, and the log is checkpointed by the \
        checkpointer, never inside a commit, so it is reused instead of growing
        """
    )
    func checkpointsOutsideCommits() async throws {
        let handle = try await TestDatabase.sqlite.make()
        defer { Task { await handle.close() } }
        let database = handle.database
        let path = try #require(database.location.sqlitePath)
        let before = database.timings.snapshot
        // 3,000 commits of one row each (four pages or so with the index): three times the checkpoint threshold.
        for index in 0..<3000 {
            try await database.transaction { sql in try await insertUser("c\(index)@example.test", on: sql) }
        }
        let after = database.timings.snapshot
        #expect(after.walCommits - before.walCommits >= 3000)
        #expect(after.walFrames - before.walFrames >= 3000, "every commit appends at least one frame")
        // The checkpoints ran on the checkpointer's thread: SQLite's own, inside a commit, is off on the writer.
        #expect((after.phases[.checkpoint]?.count ?? 0) >= 1)
        #expect(after.phases[.commit]?.count ?? 0 >= 3000)
        // The log starts over once copied, however fast the commits come: it never holds much more than four
        // times the checkpoint threshold (1,000 frames of 4 KiB and a 24-byte header each); without checkpoints it
        // would hold every frame written above.
        let logBytes = try #require(
            try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int)
        #expect(logBytes < 5 * 1000 * 4120, "the log grew to \(logBytes) bytes")
        #expect(after.walFrames - before.walFrames > 5 * 1000, "enough frames for the bound to mean anything")
    }

    @Test("on SQLite, writers that arrive while the writer's thread is busy join the open group")
    func arrivingWritersJoin() async throws {
        let handle = try await TestDatabase.sqlite.make()
        defer { Task { await handle.close() } }
        let database = handle.database
        let before = try #require(database.writeStatistics)
        let started = ManagedSignal()
        let first = Task {
            try await database.transaction { sql in
                try await insertUser("first@example.test", on: sql)
                started.fire()
                // Busy without suspending, as a long statement or an fsync keeps the writer's thread: the others
                // queue on the thread meanwhile, without having asked for the writer yet (bounded wait).
                let deadline = ContinuousClock.now + .seconds(10)
                while (database.writeStatistics?.waiting ?? 0) < 20, ContinuousClock.now < deadline { usleep(1_000) }
            }
        }
        while !started.fired { try await Task.sleep(for: .milliseconds(1)) }
        let others = (0..<20).map { index in
            Task { try await database.transaction { sql in try await insertUser("w\(index)@example.test", on: sql) } }
        }
        try await first.value
        for other in others { try await other.value }
        let after = try #require(database.writeStatistics)
        #expect(after.transactions - before.transactions == 21)
        #expect(after.commits - before.commits <= 10, "\(after.commits - before.commits) commits for 21 writes")
    }

    @Test("on SQLite, a group whose transaction is lost fails every writer in it, and the next write starts clean")
    func lostGroup() async throws {
        let handle = try await TestDatabase.sqlite.make()
        defer { Task { await handle.close() } }
        let database = handle.database
        struct Broken: Error {}
        let first = Task {
            try await database.transaction { sql in
                try await insertUser("a@example.test", on: sql)
                // Wait (bounded) until the two others queue, so all three share one group.
                let deadline = ContinuousClock.now + .seconds(20)
                while (database.writeStatistics?.waiting ?? 0) < 2, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(5))
                }
            }
        }
        while (database.writeStatistics?.transactions ?? 0) == 0 { try await Task.sleep(for: .milliseconds(5)) }
        let second = Task { try await database.transaction { sql in try await insertUser("b@example.test", on: sql) } }
        while (database.writeStatistics?.waiting ?? 0) < 1 { try await Task.sleep(for: .milliseconds(5)) }
        let third = Task {
            try await database.transaction { sql in
                try await insertUser("c@example.test", on: sql)
                // Ends the whole transaction under the group, as a failed statement can.
                try await sql.raw("ROLLBACK").run()
                throw Broken()
            }
        }
        await #expect(throws: (any Error).self) { try await first.value }
        await #expect(throws: (any Error).self) { try await second.value }
        await #expect(throws: (any Error).self) { try await third.value }
        try await database.transaction { sql in try await insertUser("d@example.test", on: sql) }
        let emails = try await database.withConnection { sql in
            try await sql.raw("SELECT email FROM users").all().map { try $0.decode(column: "email", as: String.self) }
        }
        #expect(emails == ["d@example.test"])
    }

    @Test("on SQLite, closing the database lets a running write commit, and writes queued behind it fail cleanly")
    func closeDuringWrite() async throws {
        let handle = try await TestDatabase.sqlite.make()
        let database = handle.database
        let entered = ManagedSignal()
        let running = Task {
            try await database.transaction { sql in
                entered.fire()
                try await insertUser("a@example.test", on: sql)
                try await Task.sleep(for: .milliseconds(300))
                try await insertUser("b@example.test", on: sql)
            }
        }
        while !entered.fired { try await Task.sleep(for: .milliseconds(5)) }
        let queued = Task {
            try await database.transaction { sql in
                try await insertUser("c@example.test", on: sql)
            }
        }
        await database.shutdown()
        // Closing under a running statement would crash the process or fail the write; it does neither.
        try await running.value
        await #expect(throws: KeyhavenError.self) { try await queued.value }
        await #expect(throws: KeyhavenError.self) {
            try await database.withConnection { sql in try await sql.raw("SELECT 1").run() }
        }
        let reopened = try await Database.open(handle.location, logger: Logger(label: "test"))
        let emails = try await reopened.withConnection { sql in
            try await sql.raw("SELECT email FROM users ORDER BY email").all().map {
                try $0.decode(column: "email", as: String.self)
            }
        }
        await reopened.shutdown()
        #expect(emails == ["a@example.test", "b@example.test"])
        await handle.close()
    }

    @Test("on SQLite values are stored as earlier versions stored them, and every type reads back as written")
    func storedFormats() async throws {
        let handle = try await TestDatabase.sqlite.make()
        defer { Task { await handle.close() } }
        let database = handle.database
        let id = UUID()
        let at = Date(timeIntervalSince1970: 1_764_806_400.25)
        let bytes = Data([0, 1, 2, 254, 255])
        let absent: UUID? = nil
        try await database.transaction { sql in
            try await sql.raw(
                """
                CREATE TABLE formats (u TEXT, d REAL, b INTEGER, i \
                INTEGER, x BLOB, s TEXT, n TEXT, o TEXT, e TEXT, z BLOB)
                """
            ).run()
            try await sql.raw(
                """
                INSERT INTO formats VALUES (\(bind: id), \(bind: at), \(bind: true), \(bind: Int64(-42)), \
                \(bind: bytes), \(bind: "é \u{0}NUL"), \(bind: absent), \(bind: Optional(id)), \(bind: ""), \
                \(bind: Data()))
                """
            ).run()
        }
        try await database.withConnection { sql in
            // Existing databases hold UUIDs as upper-case text and dates as seconds since 1970: reads must match them.
            let types = try #require(
                try await sql.raw(
                    """
                    SELECT typeof(u) AS u, typeof(d) AS d, typeof(b) AS b, typeof(x) AS x, typeof(n) AS n,
                    typeof(e) AS e, typeof(z) AS z, u AS text FROM formats
                    """
                ).first())
            #expect(try types.decode(column: "u", as: String.self) == "text")
            #expect(try types.decode(column: "text", as: String.self) == id.uuidString)
            #expect(try types.decode(column: "d", as: String.self) == "real")
            #expect(try types.decode(column: "b", as: String.self) == "integer")
            #expect(try types.decode(column: "x", as: String.self) == "blob")
            #expect(try types.decode(column: "n", as: String.self) == "null")
            // Empty values are empty, not NULL.
            #expect(try types.decode(column: "e", as: String.self) == "text")
            #expect(try types.decode(column: "z", as: String.self) == "blob")
            let row = try #require(try await sql.raw("SELECT * FROM formats WHERE u = \(bind: id)").first())
            #expect(try row.decode(column: "u", as: UUID.self) == id)
            #expect(try row.decode(column: "d", as: Date.self) == at)
            #expect(try row.decode(column: "b", as: Bool.self) == true)
            #expect(try row.decode(column: "i", as: Int64.self) == -42)
            #expect(try row.decode(column: "x", as: Data.self) == bytes)
            #expect(try row.decode(column: "s", as: String.self) == "é \u{0}NUL")
            #expect(try row.decode(column: "n", as: UUID?.self) == nil)
            #expect(try row.decode(column: "o", as: UUID?.self) == id)
            #expect(try row.decode(column: "d", as: Date?.self) == at)
            // A column that does not hold the type asked for is an error, not a default.
            #expect(throws: (any Error).self) { try row.decode(column: "s", as: UUID.self) }
            #expect(throws: (any Error).self) { try row.decode(column: "n", as: Date.self) }
        }
    }

    @Test(
        """
        on PostgreSQL a query with binds in a short body runs as a statement prepared once \
        per connection, with its binds' own types, and survives a table changed under it
        """,
        .enabled(if: TestDatabase.all.contains(.postgres)))
    func preparedStatements() async throws {
        let handle = try await TestDatabase.postgres.make()
        defer { Task { await handle.close() } }
        try await handle.database.withConnection(short: true) { sql in
            func prepared() async throws -> Int {
                try await sql.raw(
                    "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM pg_prepared_statements WHERE name LIKE 'kh_%'"
                )
                .first()?.decode(column: "n", as: Int.self) ?? -1
            }
            try await sql.raw("CREATE TEMPORARY TABLE shapes (id INTEGER PRIMARY KEY, name TEXT, at TIMESTAMPTZ)").run()
            let at = Date(timeIntervalSince1970: 1_800_000_000)
            try await sql.raw("INSERT INTO shapes (id, name, at) VALUES (\(bind: 1), \(bind: "one"), \(bind: at))")
                .run()
            try await sql.raw(
                "INSERT INTO shapes (id, name, at) VALUES (\(bind: 2), \(bind: nil as String?), \(bind: nil as Date?))"
            ).run()
            // An Int is sent as int8, also against an integer column; a NULL and a value in one place make two
            // statements, each with its own types.
            func name(_ id: Int) async throws -> String? {
                try await sql.raw("SELECT name FROM shapes WHERE id = \(bind: id)").first()?.decode(
                    column: "name", as: String?.self)
            }
            #expect(try await name(1) == "one")
            #expect(try await name(2) == nil)
            let row = try #require(try await sql.raw("SELECT * FROM shapes WHERE at = \(bind: at)").first())
            #expect(try row.decode(column: "id", as: Int.self) == 1)
            let count = try await prepared()
            #expect(count >= 4, "\(count) statements prepared")
            // The same texts again prepare nothing new.
            _ = try await name(1)
            _ = try await sql.raw("SELECT * FROM shapes WHERE at = \(bind: at)").first()
            #expect(try await prepared() == count)
            // A column added after `SELECT *` was prepared: the server refuses the cached plan, and the query runs
            // unprepared and sees the new column.
            try await sql.raw("ALTER TABLE shapes ADD COLUMN extra TEXT DEFAULT 'new'").run()
            let changed = try #require(try await sql.raw("SELECT * FROM shapes WHERE at = \(bind: at)").first())
            #expect(try changed.decode(column: "extra", as: String.self) == "new")
        }
    }

    @Test(
        """
        on PostgreSQL a query on a connection the server has closed fails at once, in a \
        short body or a long one, prepared or not, and the next request gets a new connection
        """,
        .enabled(if: TestDatabase.all.contains(.postgres)))
    func closedConnection() async throws {
        let handle = try await TestDatabase.postgres.make()
        defer { Task { await handle.close() } }
        let database = handle.database
        for short in [false, true] {
            for prepared in [false, true] {
                let closed = Flag()
                let outcome = await finished(within: .seconds(10)) {
                    try await database.withConnection(short: short) { sql in
                        let pid = try #require(
                            try await sql.raw("SELECT CAST(pg_backend_pid() AS BIGINT) AS pid").first()?
                                .decode(column: "pid", as: Int.self))
                        let terminated = try await database.withConnection { other in
                            try await other.raw("SELECT pg_terminate_backend(CAST(\(bind: pid) AS INTEGER)) AS done")
                                .first()?
                                .decode(column: "done", as: Bool.self)
                        }
                        if terminated == true { closed.set() }
                        // Long enough for the connection to see the close and take its channel apart.
                        try await Task.sleep(for: .milliseconds(300))
                        try await sql.raw(prepared ? "SELECT \(bind: 1) AS one" : "SELECT 1 AS one").run()
                    }
                }
                let label = "short: \(short), prepared: \(prepared)"
                #expect(closed.isSet, "\(label): the server closed the connection")
                guard case .failure(let error)? = outcome else {
                    Issue.record("\(label): \(outcome.map { "\($0)" } ?? "no answer within 10 s")")
                    continue
                }
                #expect(error as? KeyhavenError == .unavailable("The database is unavailable."), "\(label)")
                try await database.ping()
            }
        }
    }

    /// A listening socket on 127.0.0.1 that nobody accepts from: the kernel completes the TCP handshake, and the
    /// startup message then goes unanswered. Closed by `body`'s end.
    func silentServer(_ body: (String) async throws -> Void) async throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 8) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        #expect(bound)
        try await body(
            "postgres://keyhaven:pw@127.0.0.1:\(UInt16(bigEndian: address.sin_port))/keyhaven?sslmode=disable")
    }

    @Test("a PostgreSQL server that takes the connection and never answers fails it after the connect timeout")
    func connectTimeout() async throws {
        try await silentServer { url in
            let logged = RecordingLogHandler.Lines()
            await #expect(throws: KeyhavenError.unavailable("The database is unavailable.")) {
                _ = try await Database.open(
                    try DatabaseLocation(url: url), connectTimeout: .seconds(1),
                    logger: Logger(label: "test", factory: { _ in RecordingLogHandler(lines: logged) }))
            }
            // What ended the wait is the caller's own deadline of the configured second (or, on a machine so loaded
            // that it fired later still, the driver's attempt, which is given three times as long), and not the
            // pool's wait or a second attempt. No clock is read: with two cores shared by every test, a 1 s timer
            // fires when the process gets to it, and the next test shows that nothing but the process's own
            // scheduling stands between the caller and that deadline.
            let lines = logged.all
            #expect(
                lines.contains { $0.contains("connect timeout (1.0 seconds)") || $0.contains("Connect timeout (3 s)") },
                "\(lines)")
            #expect(!lines.contains { $0.contains("Connection request timed out") }, "\(lines)")
            #expect(lines.filter { $0.contains("Attemping new connection") }.count == 1, "\(lines)")
        }
    }

    @Test("the connect timeout bounds the whole wait for a connection, even while the connections' threads are stalled")
    func connectTimeoutStalledLoops() async throws {
        // The driver's timeout and the pool's wait are timers on the connections' event loops; on a loaded machine
        // those threads run late, and the wait grew to 11 s and more. Here the pool's only thread is stalled until
        // the call has answered, the worst case of that: the call must answer while the thread is still stalled,
        // which it can only do by its own deadline. No clock is compared: without that deadline the call would wait
        // for the thread, which is let go only after 120 s, so the test fails on the order of events, not on time.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let release = DispatchSemaphore(value: 0)
        let stalled = Flag()
        stalled.set()
        // Everything the pool asks of its thread queues behind this.
        group.next().execute {
            _ = release.wait(timeout: .now() + 120)
            stalled.clear()
        }
        try await silentServer { url in
            await #expect(throws: KeyhavenError.unavailable("The database is unavailable.")) {
                _ = try await Database.open(
                    try DatabaseLocation(url: url), connectTimeout: .seconds(1), eventLoopGroup: group,
                    logger: Logger(label: "test"))
            }
            #expect(stalled.isSet, "the call waited for the stalled thread instead of its own deadline")
            release.signal()
        }
        try await group.shutdownGracefully()
    }

    @Test(
        """
        on PostgreSQL every pooled connection runs with the \
        statement and lock timeouts: 30 s and 10 s unless configured
        """,
        .enabled(if: TestDatabase.all.contains(.postgres)))
    func serverTimeouts() async throws {
        func timeouts(_ database: Database) async throws -> [String] {
            try await database.withConnection { sql in
                var values: [String] = []
                for name in ["statement_timeout", "lock_timeout"] {
                    let row = try await sql.raw("SHOW \(unsafeRaw: name)").first()
                    values.append(try row?.decode(column: name, as: String.self) ?? "")
                }
                return values
            }
        }
        let defaults = try await openPostgres()
        defer { Task { await defaults.shutdown() } }
        let configured = try await openPostgres(statementTimeout: .seconds(7), lockTimeout: .milliseconds(1500))
        defer { Task { await configured.shutdown() } }
        #expect(try await timeouts(defaults) == ["30s", "10s"])
        #expect(try await timeouts(configured) == ["7s", "1500ms"])
    }

    @Test(
        """
        on PostgreSQL a statement that runs past the statement timeout fails as \
        unavailable, not as a bug; the server stops it and the database serves on
        """,
        .enabled(if: TestDatabase.all.contains(.postgres)))
    func statementTimeout() async throws {
        let database = try await openPostgres(statementTimeout: .seconds(1))
        defer { Task { await database.shutdown() } }
        let marker = "kh_slow_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        await #expect(throws: KeyhavenError.unavailable("The database is unavailable.")) {
            try await database.withConnection { sql in
                try await sql.raw("SELECT pg_sleep(30) AS \(ident: marker)").run()
            }
        }
        // Stopped on the server, not only given up on by the client (whose own deadline comes a second later): a
        // connection the client closes leaves its server process sleeping out the 30 s.
        var running = -1
        for _ in 0..<100 where running != 0 {
            running = try await database.withConnection { sql in
                try await sql.raw(
                    """
                    SELECT CAST(COUNT(*) AS BIGINT) AS n FROM pg_stat_activity
                    WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE \(bind: "%" + marker + "%")
                    """
                ).first()?.decode(column: "n", as: Int.self) ?? -1
            }
            if running != 0 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(running == 0, "the slow statement still runs on the server")
        try await database.ping()
    }

    @Test(
        "on PostgreSQL a wait for a lock past the lock timeout fails as unavailable, long before the statement timeout",
        .enabled(if: TestDatabase.all.contains(.postgres)))
    func lockTimeout() async throws {
        let database = try await openPostgres(statementTimeout: .seconds(600), lockTimeout: .seconds(1))
        defer { Task { await database.shutdown() } }
        let key = Int64.random(in: 1...Int64.max)
        let held = Flag()
        let givenUp = Flag()
        // Holds the lock until the waiter has given up, or for 30 s: a waiter that does not give up then gets the
        // lock and succeeds, which fails the test without reading a clock.
        let holder = Task {
            try await database.transaction { sql in
                try await sql.raw("SELECT pg_advisory_xact_lock(\(bind: key))").run()
                held.set()
                for _ in 0..<300 where !givenUp.isSet { try await Task.sleep(for: .milliseconds(100)) }
            }
        }
        for _ in 0..<300 where !held.isSet { try await Task.sleep(for: .milliseconds(100)) }
        try #require(held.isSet, "the lock was not taken")
        await #expect(throws: KeyhavenError.unavailable("The database is unavailable.")) {
            try await database.transaction { sql in
                try await sql.raw("SELECT pg_advisory_xact_lock(\(bind: key))").run()
            }
        }
        givenUp.set()
        try await holder.value
    }

    @Test(
        """
        on PostgreSQL long work runs past the statement timeout and the query \
        deadline, and its connection goes back to the pool with the timeouts on
        """,
        .enabled(if: TestDatabase.all.contains(.postgres)))
    func longWork() async throws {
        // One thread, so the pool hands its one connection out again each time.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let database = try await openPostgres(statementTimeout: .seconds(1), eventLoopGroup: group)
        defer { Task { await close(database, group) } }
        func slowPid(_ sql: any SQLDatabase) async throws -> Int {
            try await sql.raw("SELECT pg_sleep(2.5)").run()
            return try await backendPid(sql)
        }
        let pids = [
            try await database.withConnection(long: true, slowPid),
            try await database.transaction(long: true, slowPid),
            try await database.readSnapshot(long: true, slowPid),
        ]
        let (pid, timeouts) = try await database.withConnection { sql in
            let statement = try await sql.raw("SHOW statement_timeout").first()
            let lock = try await sql.raw("SHOW lock_timeout").first()
            return (
                try await backendPid(sql),
                [
                    try statement?.decode(column: "statement_timeout", as: String.self),
                    try lock?.decode(column: "lock_timeout", as: String.self),
                ]
            )
        }
        #expect(Set(pids) == [pid], "\(pids) then \(pid)")
        #expect(timeouts == ["1s", "10s"])
        // The same work as ordinary work is stopped.
        await #expect(throws: KeyhavenError.unavailable("The database is unavailable.")) {
            try await database.withConnection { sql in try await sql.raw("SELECT pg_sleep(2.5)").run() }
        }
    }

    /// Makes the pool open two connections (two calls overlapping), so that calls while a server hangs need no new one.
    func openTwoConnections(_ database: Database) async throws {
        async let first = database.withConnection { sql in
            try await sql.raw("SELECT pg_sleep(0.3)").run()
            return try await backendPid(sql)
        }
        async let second = database.withConnection { sql in
            try await sql.raw("SELECT pg_sleep(0.3)").run()
            return try await backendPid(sql)
        }
        try #require(Set([try await first, try await second]).count == 2, "the pool holds two connections")
    }

    @Test(
        """
        on PostgreSQL a query a hung server never answers fails as unavailable by the \
        client's deadline and its connection is closed, while long work waits the hang out
        """,
        .enabled(if: TestDatabase.all.contains(.postgres)))
    func hungServer() async throws {
        let proxy = try FreezableProxy(to: try postgresURL())
        defer { proxy.stop() }
        let logged = RecordingLogHandler.Lines()
        // One thread, so both connections made here are in the pool the calls below take from, and neither needs a
        // new connection while the server hangs.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let database = try await openPostgres(
            url: proxy.url, statementTimeout: .seconds(1), eventLoopGroup: group,
            logger: Logger(label: "test", factory: { _ in RecordingLogHandler(lines: logged) }))
        defer { Task { await close(database, group) } }
        try await openTwoConnections(database)

        proxy.freeze()
        // Long work first: were it under the deadline, it would be due before the query after it.
        let long = Task {
            try await database.withConnection(long: true) { sql in try await backendPid(sql) }
        }
        for _ in 0..<1000 where proxy.heldReads == 0 { try await Task.sleep(for: .milliseconds(10)) }
        try #require(proxy.heldReads > 0, "the long work's first query did not reach the proxy")
        // Nothing comes back from the server, so only the client's own deadline can end this call: without it the
        // call would wait for the thaw, which comes after the 60 s given here.
        let outcome = await finished(within: .seconds(60)) {
            try await database.withConnection { sql in try await sql.raw("SELECT 1 AS one").run() }
        }
        guard case .failure(let error)? = outcome else {
            Issue.record("\(outcome.map { "\($0)" } ?? "no answer within 60 s from the hung server")")
            proxy.thaw()
            return
        }
        #expect(error as? KeyhavenError == .unavailable("The database is unavailable."))
        #expect(logged.all.contains { $0.contains("did not answer within its deadline") }, "\(logged.all)")
        // The client closed that connection (the proxy saw it hang up), so the pool cannot hand it out again.
        for _ in 0..<1000 where proxy.hangUps == 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(proxy.hangUps == 1)
        proxy.thaw()
        let longOutcome = await finished(within: .seconds(60)) { _ = try await long.value }
        if case .failure(let error)? = longOutcome { Issue.record("the long work failed: \(error)") }
        #expect(longOutcome != nil, "the long work did not finish after the thaw")
        try await database.ping()
    }

    @Test(
        """
        on PostgreSQL credential reads queued behind a group a hung server \
        never answers fail with that group, not a query deadline later
        """,
        .enabled(if: TestDatabase.all.contains(.postgres)))
    func hungServerQueuedReads() async throws {
        let handle = try await TestDatabase.postgres.make()
        defer { Task { await handle.close() } }
        let proxy = try FreezableProxy(to: try postgresURL())
        defer { proxy.stop() }
        let logged = RecordingLogHandler.Lines()
        let logger = Logger(label: "test", factory: { _ in RecordingLogHandler(lines: logged) })
        // One thread, so both connections made here are in the pool the reads take from.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let database = try await Database.open(
            try DatabaseLocation(url: proxy.url), searchPath: handle.schema.map { [$0] }, statementTimeout: .seconds(1),
            eventLoopGroup: group, logger: logger)
        defer { Task { await close(database, group) } }
        let keyring = try await LiveKeyring.open(
            source: Fixtures.environmentKeyring(), database: database, allowCreate: false, logger: logger)
        let auditKeys = try await AuditKeys.open(database: database, keyring: keyring)
        let integrations = SQLIntegrationStore(
            database: database, secrets: SQLSecretStore(database: database, keyring: keyring, logger: logger),
            audit: SQLAuditLog(database: database, keys: auditKeys), logger: logger)
        try await openTwoConnections(database)

        proxy.freeze()
        let writing = Task { _ = try await integrations.readCredentials(id: UUID(), actor: .operator) { _ in nil } }
        for _ in 0..<1000 where proxy.heldReads == 0 { try await Task.sleep(for: .milliseconds(10)) }
        try #require(proxy.heldReads > 0, "the first group's query did not reach the proxy")
        // Arrives while that group waits for the server, so it waits for the next group.
        let queued = Task { _ = try await integrations.readCredentials(id: UUID(), actor: .operator) { _ in nil } }
        for read in [writing, queued] {
            let outcome = await finished(within: .seconds(60)) { try await read.value }
            guard case .failure(let error)? = outcome else {
                Issue.record("\(outcome.map { "\($0)" } ?? "no answer within 60 s from the hung server")")
                continue
            }
            #expect(error as? KeyhavenError == .unavailable("The database is unavailable."))
        }
        // Only the first group's query was cut: the queued read's group never ran (its second connection would have
        // hung too, and been cut by a deadline of its own).
        #expect(logged.all.filter { $0.contains("did not answer within its deadline") }.count == 1, "\(logged.all)")
        proxy.thaw()
    }
}

/// Keeps every message and its metadata, to read what the driver said.
private struct RecordingLogHandler: LogHandler {
    final class Lines: Sendable {
        private let lines = Mutex<[String]>([])
        var all: [String] { lines.withLock { $0 } }
        func append(_ line: String) { lines.withLock { $0.append(line) } }
    }

    let lines: Lines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(
        level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String,
        function: String, line: UInt
    ) {
        lines.append("\(message) \(self.metadata.merging(metadata ?? [:]) { _, new in new })")
    }
}

/// Inserts a user with `email`: the smallest write a test can make.
private func insertUser(_ email: String, on sql: any SQLDatabase) async throws {
    try await sql.raw(
        "INSERT INTO users (id, email, created_at) VALUES (\(bind: UUID()), \(bind: email), \(bind: Date()))"
    ).run()
}

private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
    func clear() { value.store(false, ordering: .relaxed) }
}

/// How `body` ended, or nil if it had not within `limit`. A body that never ends is left running: a query waiting on
/// a dropped promise cannot be cancelled, and a task group would wait for it.
private func finished(within limit: Duration, _ body: @escaping @Sendable () async throws -> Void) async
    -> Result<Void, any Error>?
{
    let outcome = Waiter<Result<Void, any Error>?>()
    return await withCheckedContinuation { continuation in
        outcome.set(continuation)
        Task {
            do {
                try await body()
                outcome.resume(returning: .success(()))
            } catch {
                outcome.resume(returning: .failure(error))
            }
        }
        Task {
            try? await Task.sleep(for: limit)
            outcome.resume(returning: nil)
        }
    }
}

/// The PostgreSQL server the suites run against.
private func postgresURL() throws -> String {
    guard let url = ProcessInfo.processInfo.environment["KEYHAVEN_TEST_POSTGRES_URL"], !url.isEmpty else {
        throw TestSetupError("KEYHAVEN_TEST_POSTGRES_URL is not set, and CI=true requires the PostgreSQL suites")
    }
    return url
}

/// A pool to the test server (or `url`), without a schema of its own: for tests that make no tables.
private func openPostgres(
    url: String? = nil, statementTimeout: Duration? = nil, lockTimeout: Duration? = nil,
    eventLoopGroup: MultiThreadedEventLoopGroup = .singleton, logger: Logger = Logger(label: "test")
) async throws -> Database {
    try await Database.open(
        try DatabaseLocation(url: url ?? postgresURL()), statementTimeout: statementTimeout, lockTimeout: lockTimeout,
        eventLoopGroup: eventLoopGroup, logger: logger)
}

/// Closes `database`, then the threads it ran on.
private func close(_ database: Database, _ group: MultiThreadedEventLoopGroup) async {
    await database.shutdown()
    try? await group.shutdownGracefully()
}

/// The server process of `sql`'s connection.
private func backendPid(_ sql: any SQLDatabase) async throws -> Int {
    let row = try await sql.raw("SELECT CAST(pg_backend_pid() AS BIGINT) AS pid").first()
    return try #require(try row?.decode(column: "pid", as: Int.self))
}

/// A TCP proxy on 127.0.0.1 in front of a PostgreSQL server that can stop passing bytes on, both ways, as a hung
/// server does: the connections stay open and nothing answers. What it reads meanwhile is held, and passed on when
/// it thaws. One thread per connection.
private final class FreezableProxy: Sendable {
    /// The target's URL with the proxy's port.
    let url: String
    private let listener: Int32
    private let frozen = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)
    private let reads = Atomic<Int>(0)
    private let clientsGone = Atomic<Int>(0)

    /// Reads held back while frozen.
    var heldReads: Int { reads.load(ordering: .relaxed) }
    /// Connections their client closed.
    var hangUps: Int { clientsGone.load(ordering: .relaxed) }

    init(to target: String) throws {
        guard var components = URLComponents(string: target), let host = components.host, let port = components.port
        else { throw TestSetupError("the PostgreSQL URL has no host and port") }
        var upstream = sockaddr_in()
        upstream.sin_family = sa_family_t(AF_INET)
        upstream.sin_addr.s_addr = inet_addr(host)
        upstream.sin_port = in_port_t(UInt16(port).bigEndian)
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 16) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        components.port = Int(UInt16(bigEndian: address.sin_port))
        guard listener >= 0, bound, let url = components.string else {
            close(listener)
            throw TestSetupError("the proxy cannot listen")
        }
        self.url = url
        self.listener = listener
        let target = upstream
        Thread { [self] in accept(to: target) }.start()
    }

    func freeze() { frozen.store(true, ordering: .relaxed) }
    func thaw() { frozen.store(false, ordering: .relaxed) }

    /// Stops accepting and ends every relay.
    func stop() {
        stopped.store(true, ordering: .relaxed)
        shutdown(listener, Int32(SHUT_RDWR))
    }

    private func accept(to target: sockaddr_in) {
        defer { close(listener) }
        while !stopped.load(ordering: .relaxed) {
            let client = Glibc.accept(listener, nil, nil)
            guard client >= 0 else { return }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = target
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            guard connected else {
                close(client)
                close(server)
                continue
            }
            Thread { [self] in relay(client, server) }.start()
        }
    }

    private func relay(_ client: Int32, _ server: Int32) {
        defer {
            close(client)
            close(server)
        }
        var descriptors = [client, server].map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        var held: [[UInt8]] = [[], []]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !stopped.load(ordering: .relaxed) {
            if !frozen.load(ordering: .relaxed) {
                for (index, destination) in [server, client].enumerated() where !held[index].isEmpty {
                    guard Self.send(held[index], to: destination) else { return }
                    held[index] = []
                }
            }
            guard poll(&descriptors, 2, 20) >= 0 else { return }
            for index in 0..<2 where descriptors[index].revents != 0 {
                let count = recv(descriptors[index].fd, &buffer, buffer.count, 0)
                guard count > 0 else {
                    if index == 0 { clientsGone.add(1, ordering: .relaxed) }
                    return
                }
                held[index] += buffer[..<count]
                if frozen.load(ordering: .relaxed) { reads.add(1, ordering: .relaxed) }
            }
        }
    }

    private static func send(_ bytes: [UInt8], to descriptor: Int32) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard count > 0 else { return false }
            sent += count
        }
        return true
    }
}
