import ArgumentParser
import Foundation
import KeyhavenApp
import KeyhavenCore

extension KeyhavenCommand {
    struct Rotations: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Look after the credentials that automatic rotation made at the providers.",
            subcommands: [Unretired.self]
        )
    }
}

extension KeyhavenCommand.Rotations {
    struct Unretired: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the provider credentials Keyhaven made or was to delete and no longer can.",
            discussion: """
                An integration deleted during a rotation takes with it the credentials that could delete, at the \
                provider, the one the rotation made or the one it replaced. Each such credential is listed here, by \
                the provider's id (never a secret): delete it in the provider's console.
                """
        )

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await reportingFailure {
                let (configuration, logger) = try await global.load()
                let keys = try await KeyhavenOperations.unretiredKeys(configuration, logger: logger)
                if keys.isEmpty { print("No provider credential waits to be deleted by hand.") }
                for key in keys {
                    print(
                        "\(key.createdAt.timestampText)  \(key.integrationType)  \(key.keyID ?? "(id unknown)")  "
                            + "integration \(key.integrationName) (\(key.integrationID.lowercasedText)) in workspace "
                            + "\(key.workspaceID.lowercasedText): \(key.reason)")
                }
            }
        }
    }
}
