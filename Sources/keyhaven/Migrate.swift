import ArgumentParser
import KeyhavenApp

extension KeyhavenCommand {
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply pending database migrations (serve also applies them at start).")

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await reportingFailure {
                let (configuration, logger) = try await global.load()
                let applied = try await KeyhavenOperations.migrate(configuration, logger: logger)
                print(applied.isEmpty ? "The database is up to date." : "Applied: \(applied.joined(separator: ", "))")
            }
        }
    }
}
