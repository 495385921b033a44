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
            raiseOpenFileLimit()
            try await reportingFailure {
                let (configuration, logger) = try await global.load()
                logger.info("starting Keyhaven", metadata: ["configuration": "\(configuration)"])
                let app = try await buildApplication(configuration, logger: logger)
                try await app.runService()
            }
        }
    }
}

/// Raises the soft limit on open files to the hard one: every connection is a descriptor, and thousands of idle
/// ones must not keep the server from accepting more until their deadline closes them.
private func raiseOpenFileLimit() {
    var limit = rlimit()
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    guard getrlimit(resource, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(resource, &limit)
}
