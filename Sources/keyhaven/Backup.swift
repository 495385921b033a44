import ArgumentParser
import Foundation
import KeyhavenApp
import KeyhavenBackup
import KeyhavenCore

#if canImport(Glibc)
    import Glibc
#endif

/// How a backup is protected: exactly one of a passphrase file and a key file.
struct BackupSecretOptions: ParsableArguments {
    @Option(help: "A file holding the passphrase (at least 12 bytes; stretched with scrypt).")
    var passphraseFile: String?

    @Option(help: "A file holding a 32-byte backup key, raw or base64 (openssl rand -base64 32 > FILE).")
    var keyFile: String?

    func validate() throws {
        guard (passphraseFile == nil) != (keyFile == nil) else {
            throw ValidationError("give exactly one of --passphrase-file and --key-file")
        }
    }

    func load() throws -> BackupSecret {
        if let keyFile { return try BackupSecret.keyFile(keyFile) }
        return try BackupSecret.passphraseFile(passphraseFile ?? "")
    }
}

extension KeyhavenCommand {
    struct Backup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write (the default) or verify an encrypted backup of the whole database.",
            discussion: "`keyhaven backup --output FILE …` writes one; `keyhaven backup verify FILE …` checks one.",
            subcommands: [Create.self, Verify.self], defaultSubcommand: Create.self)
    }
}

extension KeyhavenCommand.Backup {
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write an encrypted backup of the whole database.",
            discussion: """
                One consistent snapshot of every table, encrypted with AES-256-GCM in authenticated chunks under a \
                key from --passphrase-file (scrypt) or --key-file. Secrets stay under their wrapped data keys: \
                restoring needs the same master keys, unless --include-keyring puts them inside. The file is \
                written beside FILE and renamed into place once complete; a failed run leaves nothing. The file \
                format is described in docs/backup-format.md.
                """)

        @OptionGroup var global: GlobalOptions
        @OptionGroup var secret: BackupSecretOptions

        @Option(help: "The backup file to write.")
        var output: String

        @Flag(help: "Also put the master keys inside, so the passphrase or key alone recovers everything.")
        var includeKeyring = false

        @Flag(help: "Show progress on stderr even when it is not a terminal.")
        var progress = false

        func run() async throws {
            try await reportingFailure {
                let (configuration, logger) = try await global.load()
                let backupSecret = try secret.load()
                let display = ProgressDisplay(enabled: progress || isatty(STDERR_FILENO) == 1, label: "backing up")
                let result = try await KeyhavenOperations.backup(
                    configuration, logger: logger, output: output, secret: backupSecret, includeKeyring: includeKeyring,
                    progress: { display.update(done: Int($0.done), total: Int($0.total)) })
                display.finish()
                print(
                    "Backup written to \(result.path): \(result.header.totalRows) rows in "
                        + "\(result.header.tables.count) tables, \(result.bytes) bytes; "
                        + (includeKeyring
                            ? "the master keys are inside."
                            : "the master keys are not inside: restoring needs the same keyring."))
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decrypt and check a backup without touching any database.",
            discussion: "Exits 0 if every chunk, record and row count checks out, else names the problem in one line.")

        @OptionGroup var secret: BackupSecretOptions

        @Argument(help: "The backup file.")
        var file: String

        func run() async throws {
            try await reportingFailure {
                let verification = try KeyhavenOperations.verifyBackup(path: file, secret: try secret.load())
                let header = verification.header
                print(
                    "The backup is intact: \(header.totalRows) rows in \(header.tables.count) tables, taken "
                        + "\(header.createdAt) from \(header.source) (schema \(header.schemaVersion)); master keys "
                        + (header.includesKeyring ? "inside." : "not inside."))
            }
        }
    }
}
