import ArgumentParser
import Hummingbird
import KeyhavenApp

#if canImport(Glibc)
    import Glibc
#endif

extension KeyhavenCommand {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the server (migrates the database and checks the keyring first).",
            discussion: """
                On a fresh, empty database with no master key configured, a keyring is generated at \
                ./data/keyring.json (mode 0600): back it up. A database that already holds secrets is never given \
                a new key: the server refuses to start instead. SIGTERM stops the server gracefully.
                """
        )

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            // Past a file-size limit (`ulimit -f`) a write then fails with EFBIG, which the server reports like a
            // full disk (503), instead of the signal killing it in the middle of a write.
            signal(SIGXFSZ, SIG_IGN)
            ProcessLimits.raiseOpenFiles()
            try await reportingFailure {
                let (configuration, logger) = try await global.load()
                logger.info("starting Keyhaven", metadata: ["configuration": "\(configuration)"])
                let app = try await buildApplication(configuration, logger: logger)
                try await app.runService()
            }
        }
    }
}
