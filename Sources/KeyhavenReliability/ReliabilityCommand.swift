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
            (a private one: the run stops it). SQLite: the server's files are kept from growing, as on a full disk, \
            with a file-size limit set on its process (prlimit), then lifted.
            """)

    @OptionGroup var common: CommonOptions

    @Option(help: "A shell command that stops PostgreSQL.")
    var stopCommand: String?

    @Option(help: "A shell command that starts PostgreSQL again and returns once it accepts connections.")
    var startCommand: String?

    func run() async throws {
        let deployment = try await common.deployment()
        let outage: Outage
        if common.database == "postgres" {
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
        try report("database outage on \(common.database)", problems)
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
    defer { arguments.forEach { free($0) } }
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
