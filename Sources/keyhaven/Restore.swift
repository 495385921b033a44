import ArgumentParser
import Foundation
import KeyhavenApp
import KeyhavenCore

#if canImport(Glibc)
    import Glibc
#endif

extension KeyhavenCommand {
    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load a backup into an empty database (SQLite or PostgreSQL).",
            discussion: """
                The configured database must be empty: it is migrated, then every row is loaded in one \
                transaction and checked before it commits (row counts, the audit chain, and that every secret \
                version opens with the master keys from the backup or the configured keyring). Any failure, or a \
                killed process, leaves the database empty. Master keys from the backup that the configured \
                keyring lacks are added to its keyring file. To move from SQLite to PostgreSQL, back up the old \
                database and restore with --database-url set to the new one.
                """)

        @OptionGroup var global: GlobalOptions
        @OptionGroup var secret: BackupSecretOptions

        @Option(help: "The backup file to load.")
        var input: String

        @Flag(help: "Show progress on stderr even when it is not a terminal.")
        var progress = false

        func run() async throws {
            try await reportingFailure {
                let (configuration, logger) = try await global.load()
                let display = ProgressDisplay(enabled: progress || isatty(STDERR_FILENO) == 1, label: "restoring")
                let summary = try await KeyhavenOperations.restore(
                    configuration, logger: logger, input: input, secret: try secret.load(),
                    progress: { display.update(done: Int($0.done), total: Int($0.total)) })
                display.finish()
                print(
                    "Restored \(summary.rows) rows into \(configuration.database): \(summary.secretsOpened) secret "
                        + "versions open, the audit chain of \(summary.auditEvents) events verifies.")
                if !summary.keysWritten.isEmpty {
                    print(
                        "Added the backup's master keys to \(configuration.keyring.file?.path ?? "the keyring file"): "
                            + summary.keysWritten.joined(separator: ", ") + ". Back that file up.")
                }
            }
        }
    }
}
