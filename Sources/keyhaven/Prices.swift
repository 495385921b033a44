import ArgumentParser
import Foundation
import KeyhavenApp
import KeyhavenCore

extension KeyhavenCommand {
    struct Prices: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage the model price table that prices usage.",
            subcommands: [Import.self]
        )
    }
}

extension KeyhavenCommand.Prices {
    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Replace the model price table with FILE (LiteLLM's model_prices_and_context_window.json format).",
            discussion:
                "The file is checked first; nothing changes if it is refused. Running servers use it within 30 seconds."
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The price table, a JSON file.")
        var file: String

        func run() async throws {
            try await reportingFailure {
                guard let data = FileManager.default.contents(atPath: file) else {
                    throw KeyhavenError.badRequest("\(file) cannot be read")
                }
                let (configuration, logger) = try await global.load()
                let (models, hash) = try await KeyhavenOperations.importPrices(data, configuration, logger: logger)
                print(
                    "Imported prices of \(models) models (sha256 "
                        + "\(hash.prefix(12))); running servers use them within 30 seconds."
                )
            }
        }
    }
}
