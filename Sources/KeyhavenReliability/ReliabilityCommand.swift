import ArgumentParser
import Foundation
import KeyhavenTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// keyhaven-reliability: checks of what must survive crashes, outages and abuse, run against a built `keyhaven`
/// binary. `./scripts/test` runs them in a bounded form on the debug build, `./scripts/bench --crash` in full on
/// the release build. Each exits non-zero when a property does not hold, and says which.
@main
struct Reliability: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyhaven-reliability", abstract: "Crash, outage and abuse checks against a keyhaven binary.",
        subcommands: [Crash.self, DatabaseOutage.self, TwoInstances.self, HostileClients.self])
}

struct CommonOptions: ParsableArguments {
    @Option(help: "The keyhaven executable to run.")
    var binary: String

    @Option(help: "sqlite, or postgres (a new database on the server at KEYHAVEN_TEST_POSTGRES_URL).")
    var database: String = "sqlite"

    func deployment(keyringFile: Bool = false) async throws -> Deployment {
        guard let kind = TestDatabase(rawValue: database) else {
            throw ValidationError("--database must be sqlite or postgres")
        }
        return try await Deployment.make(
            binary: KeyhavenBinary(path: binary), kind: kind,
            postgresURL: ProcessInfo.processInfo.environment["KEYHAVEN_TEST_POSTGRES_URL"], keyringFile: keyringFile)
    }
}

struct TwoInstances: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "instances",
        abstract: "Two servers on one PostgreSQL: sessions, verification, limits and a key rotation across both.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        guard common.database == "postgres" else { throw ValidationError("instances runs on PostgreSQL only") }
        let deployment = try await common.deployment(keyringFile: true)
        let instances = Instances(deployment: deployment)
        var problems = try await instances.run { say($0) }
        problems += try await deployment.checkAtRest(
            answeredReads: [:], gatewayAnswered: instances.gatewayAnswered.value)
        await deployment.remove()
        try report("two instances on postgres", problems)
    }
}

struct HostileClients: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "abuse",
        abstract: "Bad input and connections that make no progress, while a well-behaved client is served.")

    @OptionGroup var common: CommonOptions

    func run() async throws {
        let deployment = try await common.deployment()
        let problems = try await Abuse(deployment: deployment).run { say($0) }
        await deployment.remove()
        try report("hostile clients on \(common.database)", problems)
    }
}

/// Writes a line to stdout at once (print's buffer would hold progress back from a pipe).
@Sendable func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func report(_ name: String, _ problems: [String]) throws {
    if problems.isEmpty {
        say("\(name): holds")
    } else {
        say("\(name): FAILED")
        for problem in problems.prefix(20) { say("  - \(problem)") }
        throw ExitCode.failure
    }
}

struct Crash: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "SIGKILL the server under concurrent writes and reads, then check that nothing acknowledged is lost.")

    @OptionGroup var common: CommonOptions

    @Option(help: "How many times to kill the server.")
    var cycles = 3

    @Option(help: "Concurrent clients.")
    var clients = 8

    @Option(help: "The longest load before a kill, in seconds (each cycle draws from 0.2 s to this).")
    var seconds = 1.5

    func run() async throws {
        let deployment = try await common.deployment()
        let started = ContinuousClock.now
        let problems = try await CrashCycles(
            deployment: deployment, cycles: cycles, clients: clients, loadSeconds: 0.2...max(0.2, seconds)
        ).run { say($0) }
        await deployment.remove()
        say("crash cycles (\(common.database), \(cycles) kills) took \(ContinuousClock.now - started)")
        try report("crash safety on \(common.database)", problems)
    }
}

struct DatabaseOutage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outage",
        abstract: "Take the database away under load and give it back, without restarting the server.",
        discussion: """
            PostgreSQL: --stop-command and --start-command stop and start the server at KEYHAVEN_TEST_POSTGRES_URL \
            (a private one: the run stops it); or, with --hang-data-directory, its processes are stopped with \
            SIGSTOP for 5 s and continued, while Keyhaven runs with a 2 s statement timeout. SQLite: the server's \
            files are kept from growing, as on a full disk, with a file-size limit set on its process (prlimit), then \
            lifted.
            """)

    @OptionGroup var common: CommonOptions

    @Option(help: "A shell command that stops PostgreSQL.")
    var stopCommand: String?

    @Option(help: "A shell command that starts PostgreSQL again and returns once it accepts connections.")
    var startCommand: String?

    @Option(help: "PostgreSQL's data directory: hang that server (SIGSTOP) instead of stopping it.")
    var hangDataDirectory: String?

    func run() async throws {
        let deployment = try await common.deployment()
        var outage: Outage
        var name = "database outage on \(common.database)"
        if let hangDataDirectory {
            guard common.database == "postgres" else { throw ValidationError("only PostgreSQL can be hung") }
            let hang = PostgresHang(dataDirectory: hangDataDirectory)
            let statementTimeout = 2
            outage = Outage(
                deployment: deployment, breakDatabase: { _ in try hang.stop() },
                repairDatabase: { _ in try hang.resume() }, clients: 8, checkReadiness: true)
            outage.length = .seconds(5)
            // A query the hung server never answers fails a second after the statement timeout, a wait for a new
            // connection after the connect timeout; one more second for the load on the machine.
            outage.answerWithin = .seconds(statementTimeout + 2)
            outage.serverEnvironment = [
                "KEYHAVEN_DATABASE_STATEMENT_TIMEOUT": "\(statementTimeout)",
                "KEYHAVEN_DATABASE_CONNECT_TIMEOUT": "\(statementTimeout)",
            ]
            name = "database outage on postgres, hung (SIGSTOP 5 s, statement timeout \(statementTimeout) s)"
        } else if common.database == "postgres" {
            guard let stopCommand, let startCommand else {
                throw ValidationError("PostgreSQL needs --stop-command and --start-command")
            }
            outage = Outage(
                deployment: deployment, breakDatabase: { _ in try await shell(stopCommand) },
                repairDatabase: { _ in try await shell(startCommand) }, clients: 8, checkReadiness: true)
        } else {
            // Every write past the first byte of a file fails (EFBIG), as writes fail on a full disk.
            outage = Outage(
                deployment: deployment, breakDatabase: { try await shell("prlimit --pid \($0) --fsize=1:unlimited") },
                repairDatabase: { try await shell("prlimit --pid \($0) --fsize=unlimited") }, clients: 8,
                checkReadiness: true)
        }
        var problems = try await outage.run { say($0) }
        problems += try await deployment.checkAtRest(answeredReads: outage.answeredReads)
        await deployment.remove()
        let answers = String(
            format: ", every answer within %.0f s, slowest %.3f s", outage.answerWithin / .seconds(1), outage.slowest)
        try report(name + answers, problems)
    }
}

/// The processes of the PostgreSQL server whose data directory is `dataDirectory`, stopped with SIGSTOP and
/// continued with SIGCONT: a server that hangs, its connections open and nothing answering. Signalling them needs
/// their user, or root.
struct PostgresHang: Sendable {
    let dataDirectory: String

    /// Stops the postmaster, then its children (the server processes): stopped first, it starts no new one.
    ///
    /// - Throws: if the postmaster is not found or cannot be signalled.
    func stop() throws {
        let postmaster = try self.postmaster()
        guard kill(postmaster, SIGSTOP) == 0 else {
            throw ValidationError("cannot stop PostgreSQL's process \(postmaster)")
        }
        // A child that exited meanwhile is gone: nothing to stop.
        for child in children(of: postmaster) { kill(child, SIGSTOP) }
    }

    /// Continues the postmaster's children, then the postmaster.
    ///
    /// - Throws: if the postmaster is not found or cannot be signalled.
    func resume() throws {
        let postmaster = try self.postmaster()
        for child in children(of: postmaster) { kill(child, SIGCONT) }
        guard kill(postmaster, SIGCONT) == 0 else {
            throw ValidationError("cannot continue PostgreSQL's process \(postmaster)")
        }
    }

    /// The first line of `postmaster.pid`.
    private func postmaster() throws -> pid_t {
        let text = (try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first, let pid = pid_t(line), pid > 1 else {
            throw ValidationError("no running PostgreSQL in \(dataDirectory)")
        }
        return pid
    }

    /// The processes whose parent is `parent`, from /proc.
    private func children(of parent: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { pid_t($0) }.filter { pid in
            // `pid (name) state ppid …`: the name may hold spaces and parentheses, so read after the last `)`.
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let end = stat.lastIndex(of: ")")
            else { return false }
            let fields = stat[stat.index(after: end)...].split(separator: " ")
            return fields.count > 1 && pid_t(fields[1]) == parent
        }
    }
}

/// Runs `command` with /bin/sh and waits for it, polling. Not with Foundation's `Process`: it learns of an exit
/// from a descriptor its child inherits, which a daemon the command starts (`pg_ctl start`) keeps open.
///
/// - Throws: when it exits non-zero or runs over 60 s.
func shell(_ command: String) async throws {
    var pid: pid_t = 0
    var arguments: [UnsafeMutablePointer<CChar>?] = []
    for text in ["/bin/sh", "-c", command] { arguments.append(strdup(text)) }
    arguments.append(nil)
    defer { for argument in arguments { free(argument) } }
    guard posix_spawn(&pid, "/bin/sh", nil, nil, arguments, environ) == 0 else {
        throw ValidationError("cannot run /bin/sh")
    }
    var status: Int32 = 0
    for _ in 0..<6000 {
        if waitpid(pid, &status, WNOHANG) == pid {
            // Exited normally with 0.
            guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else { throw ValidationError("`\(command)` failed") }
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
    kill(pid, SIGKILL)
    throw ValidationError("`\(command)` ran over 60 s")
}
