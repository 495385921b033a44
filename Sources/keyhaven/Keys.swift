import ArgumentParser
import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenStorage
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

extension KeyhavenCommand {
    struct Keys: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Inspect, rotate and retire master keys.",
            subcommands: [Status.self, Rotate.self, Retire.self]
        )
    }
}

extension KeyhavenCommand.Keys {
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the master keys, which one is active, and how many secrets each wraps.")

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await reportingFailure {
                let (configuration, logger) = try await global.load()
                let keys = try await KeyhavenOperations.keyStatus(configuration, logger: logger)
                let rows = keys.map { key in
                    [
                        key.id,
                        key.active
                            ? "active" : (key.registered ? (key.rows > 0 ? "retiring" : "retirable") : "pending"),
                        key.inKeyring ? "yes" : (key.registered ? "NO" : "yes"),
                        String(key.rows), String(key.wraps),
                        key.createdAt.map { $0.formatted(.iso8601) } ?? "-",
                    ]
                }
                printTable(header: ["ID", "STATE", "IN KEYRING", "ROWS", "WRAPS", "CREATED"], rows: rows)
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Activate a new master key and re-wrap every data key with it.",
            discussion: """
                The new key is added to the keyring file first; then every data key is re-wrapped in batches (the \
                encrypted credentials are not touched). Servers may keep running. If the command is interrupted, \
                run it again: it finishes the rows still wrapped by older keys. Retire the old key afterwards \
                with `keyhaven keys retire <id>`.
                """
        )

        @OptionGroup var global: GlobalOptions

        @Option(help: "Rows re-wrapped per transaction.")
        var batchSize: Int = 500

        @Option(help: "Milliseconds to pause between batches, to spare a busy database.")
        var pause: Int = 0

        @Flag(help: "Show progress on stderr even when it is not a terminal.")
        var progress = false

        func validate() throws {
            guard (1...10_000).contains(batchSize) else { throw ValidationError("--batch-size must be 1-10000") }
            guard pause >= 0 else { throw ValidationError("--pause must not be negative") }
        }

        func run() async throws {
            try await reportingFailure {
                let (configuration, logger) = try await global.load()
                let display = ProgressDisplay(enabled: progress || isatty(STDERR_FILENO) == 1)
                let result = try await KeyhavenOperations.rotate(
                    configuration, logger: logger, batchSize: batchSize, pause: .milliseconds(pause),
                    progress: { display.update($0) })
                display.finish()
                print(
                    "\(result.resumed ? "Finished the interrupted rotation" : "Rotated"): \(result.rewrapped) "
                        + "data keys re-wrapped; active master key: \(result.activeKeyID)")
                if !result.retirable.isEmpty {
                    print(
                        "No longer used, retire with `keyhaven keys retire "
                            + "<id>`: \(result.retirable.joined(separator: ", "))"
                    )
                }
                if !result.failed.isEmpty {
                    let ids = result.failed.map { $0.lowercasedText }.joined(separator: ", ")
                    throw KeyhavenError.keyring(
                        "\(result.failed.count) data keys did not open "
                            + "under their master key and were left as they are "
                            + "(secret ids: \(ids)); restore them from a backup or delete their integrations, then run "
                            + "keyhaven keys rotate again")
                }
            }
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a master key from the keyring once no secret references it.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The id of the key to retire (see `keyhaven keys status`).")
        var id: String

        func run() async throws {
            try await reportingFailure {
                let (configuration, logger) = try await global.load()
                try await KeyhavenOperations.retire(id: id, configuration, logger: logger)
                print("Retired master key \(id).")
                if configuration.keyring.environmentKey?.id == id {
                    print("It is still set in KEYHAVEN_MASTER_KEY: remove it from there.")
                }
            }
        }
    }
}

/// Rotation progress on stderr: one updating line on a terminal, otherwise a line at most every quarter second.
final class ProgressDisplay: Sendable {
    private let enabled: Bool
    private let label: String
    private let terminal = isatty(STDERR_FILENO) == 1
    private let state = Mutex<(last: ContinuousClock.Instant?, started: ContinuousClock.Instant)>((nil, .now))

    init(enabled: Bool, label: String = "re-wrapping") {
        self.enabled = enabled
        self.label = label
    }

    func update(_ progress: RotationProgress) {
        update(done: progress.done, total: progress.total)
    }

    func update(done: Int, total: Int) {
        let progress = (done: done, total: total)
        guard enabled else { return }
        let line: String? = state.withLock { state in
            let now = ContinuousClock.now
            if let last = state.last, last.duration(to: now) < .milliseconds(250), progress.done < progress.total {
                return nil
            }
            state.last = now
            let elapsed =
                Double(state.started.duration(to: now).components.attoseconds) / 1e18
                + Double(state.started.duration(to: now).components.seconds)
            let percent = progress.total == 0 ? 100 : progress.done * 100 / progress.total
            let rate = elapsed > 0 ? Int(Double(progress.done) / elapsed) : 0
            return "\(label): \(progress.done)/\(progress.total) (\(percent)%) \(rate) rows/s"
        }
        guard let line else { return }
        FileHandle.standardError.write(Data((terminal ? "\r\(line)\u{1B}[K" : "\(line)\n").utf8))
    }

    func finish() {
        if enabled && terminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

func printTable(header: [String], rows: [[String]]) {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    for row in all {
        print(
            row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
    }
}
