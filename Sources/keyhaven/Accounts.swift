import ArgumentParser
import Foundation
import KeyhavenApp
import KeyhavenCore

extension KeyhavenCommand {
    struct Users: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage user accounts.", subcommands: [Create.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Create a user; the password is read from stdin (one line).",
                discussion: "Works also when sign-up is closed (KEYHAVEN_ALLOW_SIGNUP=false). Prints the new user's id."
            )

            @OptionGroup var global: GlobalOptions

            @Option(help: "The user's email.")
            var email: String

            func run() async throws {
                try await reportingFailure {
                    let (configuration, logger) = try await global.load()
                    guard let password = readLine(strippingNewline: true), !password.isEmpty else {
                        throw KeyhavenError.badRequest("give the password on stdin")
                    }
                    let user = try await KeyhavenOperations.createUser(
                        email: email, password: password, configuration, logger: logger)
                    print(user.id.lowercasedText)
                }
            }
        }
    }

    struct Tokens: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create and revoke service tokens for the application backend.",
            subcommands: [CreateService.self, Revoke.self])

        struct CreateService: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "create-service",
                abstract: "Create a service token; the token alone is the last line of stdout (shown once).")

            @OptionGroup var global: GlobalOptions

            @Option(help: "A name to recognise the token by.")
            var name: String

            @Option(help: "A scope (credentials:read, gateway:use, usage:report); repeat for more.")
            var scope: [String] = ["credentials:read"]

            @Option(help: "Limit the token to one workspace: an organization's id, or a user's id for their own.")
            var workspace: String?

            func run() async throws {
                try await reportingFailure {
                    let workspaceID = try workspace.map { text in
                        guard let id = UUID(uuidString: text) else {
                            throw KeyhavenError.badRequest("--workspace must be a workspace id (a UUID)")
                        }
                        return id
                    }
                    let (configuration, logger) = try await global.load()
                    let scopes = try Set(
                        scope.map { text in
                            guard let scope = TokenScope(rawValue: text), TokenScope.service.contains(scope) else {
                                throw KeyhavenError.badRequest(
                                    "unknown service scope \(text): use credentials:read, gateway:use or usage:report")
                            }
                            return scope
                        })
                    let (token, record) = try await KeyhavenOperations.createServiceToken(
                        name: name, scopes: scopes, workspace: workspaceID, configuration, logger: logger)
                    print("Service token \(record.id.lowercasedText) created; store it now, it is not shown again:")
                    print(token)
                }
            }
        }

        struct Revoke: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Revoke a token by id.")

            @OptionGroup var global: GlobalOptions

            @Argument(help: "The token's id.")
            var id: String

            func run() async throws {
                try await reportingFailure {
                    let (configuration, logger) = try await global.load()
                    guard let uuid = UUID(uuidString: id) else {
                        throw KeyhavenError.badRequest("\(id) is not a token id")
                    }
                    try await KeyhavenOperations.revokeToken(id: uuid, configuration, logger: logger)
                    print("Revoked token \(uuid.lowercasedText).")
                }
            }
        }
    }

    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the audit trail.", subcommands: [Verify.self])

        struct Verify: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Recompute the audit hash chain; exit 0 if intact, else name the first broken event.")

            @OptionGroup var global: GlobalOptions

            func run() async throws {
                try await reportingFailure {
                    let (configuration, logger) = try await global.load()
                    switch try await KeyhavenOperations.verifyAudit(configuration, logger: logger) {
                    case .intact(let events):
                        print("The audit chain is intact: \(events) events.")
                    case .broken(let seq, let reason):
                        throw KeyhavenError.badRequest("the audit chain is broken at event \(seq): \(reason)")
                    }
                }
            }
        }
    }
}
