import ArgumentParser
import Foundation
import KeyhavenApp
import KeyhavenCore
import Logging

@main
struct KeyhavenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyhaven",
        abstract: "A self-hosted vault for the provider credentials your users bring.",
        subcommands: [
            Serve.self, Migrate.self, Keys.self, Users.self, Tokens.self, Audit.self, Backup.self, Restore.self,
            Prices.self,
            Rotations.self,
        ]
    )
}

/// The settings every command takes; each flag overrides its environment variable (and `.env`).
struct GlobalOptions: ParsableArguments {
    @Option(help: "Database URL, sqlite://PATH or postgres://… (KEYHAVEN_DATABASE_URL).")
    var databaseURL: String?

    @Option(help: "Keyring file with the master keys (KEYHAVEN_KEYRING_FILE).")
    var keyringFile: String?

    @Option(help: "Address to listen on (KEYHAVEN_HOST, default 127.0.0.1).")
    var host: String?

    @Option(help: "Port to listen on (KEYHAVEN_PORT, default 8080).")
    var port: String?

    @Option(help: "URL users reach the server at (KEYHAVEN_PUBLIC_URL).")
    var publicURL: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical (KEYHAVEN_LOG_LEVEL).")
    var logLevel: String?

    @Option(help: "text or json (KEYHAVEN_LOG_FORMAT).")
    var logFormat: String?

    @Option(help: "Environment file read after the environment itself.")
    var envFile: String = ".env"

    /// Reads the configuration and sets up logging; call once per process.
    func load() async throws -> (KeyhavenConfiguration, Logger) {
        var overrides: [String: String] = [:]
        overrides["keyhaven.database.url"] = databaseURL
        overrides["keyhaven.keyring.file"] = keyringFile
        overrides["keyhaven.host"] = host
        overrides["keyhaven.port"] = port
        overrides["keyhaven.public.url"] = publicURL
        overrides["keyhaven.log.level"] = logLevel
        overrides["keyhaven.log.format"] = logFormat
        let reader = try await KeyhavenConfiguration.reader(overrides: overrides, environmentFile: envFile)
        let configuration = try KeyhavenConfiguration(reader: reader)
        KeyhavenLogging.bootstrap(format: configuration.logFormat, level: configuration.logLevel)
        return (configuration, Logger(label: "keyhaven"))
    }
}

/// Runs a command body; any failure becomes one line on stderr and a non-zero exit.
func reportingFailure(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ExitCode {
        throw error
    } catch {
        var reason = (error as? KeyhavenError)?.message ?? "\(error)"
        if case .validationFailed(let fields)? = error as? KeyhavenError {
            reason = fields.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: "; ")
        }
        FileHandle.standardError.write(Data("keyhaven: error: \(reason)\n".utf8))
        throw ExitCode.failure
    }
}
