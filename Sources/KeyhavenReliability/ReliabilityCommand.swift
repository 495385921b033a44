import ArgumentParser
import Foundation
import KeyhavenTestSupport

/// keyhaven-reliability: checks of what must survive crashes, outages and abuse, run against a built `keyhaven`
/// binary. `./scripts/test` runs them in a bounded form on the debug build, `./scripts/bench --crash` in full on
/// the release build. Each exits non-zero when a property does not hold, and says which.
@main
struct Reliability: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyhaven-reliability", abstract: "Crash, outage and abuse checks against a keyhaven binary.",
        subcommands: [Crash.self])
}

struct CommonOptions: ParsableArguments {
    @Option(help: "The keyhaven executable to run.")
    var binary: String

    @Option(help: "sqlite, or postgres (a new database on the server at KEYHAVEN_TEST_POSTGRES_URL).")
    var database: String = "sqlite"

    func deployment() async throws -> Deployment {
        guard let kind = TestDatabase(rawValue: database) else { throw ValidationError("--database must be sqlite or postgres") }
        return try await Deployment.make(
            binary: KeyhavenBinary(path: binary), kind: kind,
            postgresURL: ProcessInfo.processInfo.environment["KEYHAVEN_TEST_POSTGRES_URL"])
    }
}

func report(_ name: String, _ problems: [String]) throws {
    if problems.isEmpty {
        print("\(name): holds")
    } else {
        print("\(name): FAILED")
        for problem in problems.prefix(20) { print("  - \(problem)") }
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
        ).run { print($0) }
        await deployment.remove()
        print("crash cycles (\(common.database), \(cycles) kills) took \(ContinuousClock.now - started)")
        try report("crash safety on \(common.database)", problems)
    }
}
