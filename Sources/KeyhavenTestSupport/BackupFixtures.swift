import Crypto
import Foundation
import KeyhavenApp
import KeyhavenBackup
import KeyhavenCore
import KeyhavenDatabase
import KeyhavenServices
import KeyhavenStorage
import Logging
import SQLKit

/// A deployment with every kind of row, for backup tests: several users, an organization with a member, an
/// accepted and a pending invitation, integrations (personal and the organization's) with several credential
/// versions, a rotated master key, tokens (one scoped to the organization), sessions, rate-limit windows, audit
/// events and a checkpoint.
public struct BackupScenario: Sendable {
    /// Every credential version stored, by integration: (owner, version → plaintext).
    public var credentials: [UUID: (owner: UUID, versions: [Int: String])] = [:]
    /// The canary strings stored as credentials (none may appear in a backup in clear).
    public var canaries: [String] { credentials.values.flatMap { $0.versions.values } }

    /// Fills `runtime` (whose keyring source must have a keyring file, for the rotation).
    public static func populate(_ runtime: KeyhavenRuntime, users: Int = 3, integrationsPerUser: Int = 3) async throws
        -> BackupScenario
    {
        var scenario = BackupScenario()
        var owners: [(user: UUID, integration: UUID)] = []
        var people: [User] = []
        for index in 0..<users {
            let user = try await runtime.users.create(
                email: "backup-\(index)-\(UUID().uuidString.prefix(6).lowercased())@example.test",
                passwordHash: "$2b$04$notarealhashbutlongenoughfortests....................",
                audit: AuditEntry(actor: .operator, action: .signup))
            people.append(user)
            _ = try await runtime.sessions.create(userID: user.id, lifetime: .seconds(3600))
            _ = try await runtime.tokens.create(
                kind: .personal, userID: user.id, name: "pat \(index)", scopes: [.integrationsRead], expiresAt: nil,
                audit: AuditEntry(
                    actor: AuditActor(kind: .user, id: user.id.lowercasedText), action: .tokenCreate, ownerID: user.id))
            for number in 0..<integrationsPerUser {
                let canary = Fixtures.canary("backup")
                let integration = try await runtime.integrations.create(
                    ownerID: user.id, name: "integration \(number)", type: .openai, config: ["region": "eu"],
                    credentials: .apiKey(canary), actor: AuditActor(kind: .user, id: user.id.lowercasedText))
                scenario.credentials[integration.id] = (user.id, [1: canary])
                owners.append((user.id, integration.id))
            }
        }
        _ = try await runtime.tokens.create(
            kind: .service, userID: nil, name: "backend", scopes: [.credentialsRead], expiresAt: nil,
            audit: AuditEntry(actor: .operator, action: .tokenCreate))
        // An organization: the first user owns it, the second joined by invitation, a third invitation waits.
        if people.count >= 2 {
            let owner = AuditActor(kind: .user, id: people[0].id.lowercasedText)
            let team = try await runtime.organizations.create(name: "backup team", by: people[0].id, actor: owner)
            let (token, _) = try await runtime.organizations.invite(
                email: people[1].email ?? "", role: .member, to: team.id, actor: owner, now: Date())
            _ = try await runtime.organizations.accept(
                token: token, user: people[1], actor: AuditActor(kind: .user, id: people[1].id.lowercasedText),
                now: Date())
            _ = try await runtime.organizations.invite(
                email: "pending@example.test", role: .viewer, to: team.id, actor: owner, now: Date())
            let canary = Fixtures.canary("backup-team")
            let shared = try await runtime.integrations.create(
                ownerID: team.id, name: "shared", type: .openai, config: [:], credentials: .apiKey(canary), actor: owner
            )
            scenario.credentials[shared.id] = (team.id, [1: canary])
            // A template of the team, and the shared integration made from it.
            let template = try await SQLTemplateStore(database: runtime.database, audit: runtime.audit).create(
                IntegrationTemplate(
                    ownerID: team.id, name: "team OpenAI", type: .openai, namePattern: "OpenAI {n}",
                    rotation: RotationPolicy(mode: .remind, everyDays: 60, graceHours: 24),
                    limits: UsageLimits(monthlyBudgetMicros: 1_000_000), allowedEndpoints: ["/v1/chat/completions"]),
                actor: owner)
            try await runtime.database.transaction { sql in
                try await sql.raw(
                    "UPDATE integrations SET template_id = \(bind: template.id) WHERE id = \(bind: shared.id)"
                ).run()
            }
            // Usage of the shared integration: a gateway batch and a report.
            let tokens = TokenUsage(inputTokens: 1_000, cachedInputTokens: 400, outputTokens: 500)
            try await runtime.usage.append([
                UsageEvent(
                    ownerID: team.id, integrationID: shared.id, type: .openai, model: "gpt-4o", source: .gateway,
                    status: 200, tokens: tokens, costMicros: 7_000, tokenID: nil, estimated: true)
            ])
            _ = try await runtime.usage.report(
                UsageEvent(
                    ownerID: team.id, integrationID: shared.id, type: .openai, model: "house-model", source: .reported,
                    requests: 3, tokens: tokens, costMicros: nil, tokenID: nil, idempotencyKey: "backup-fixture"),
                audit: AuditEntry(actor: .system, action: .usageReport, ownerID: team.id, integrationID: shared.id))
            try await runtime.routes.put(
                GatewayRoute(name: "primary", ownerID: team.id, integrationIDs: [shared.id], updatedAt: Date()),
                actor: owner)
            try await runtime.priceStore.setOverrides(
                [
                    PriceOverride(
                        model: "gpt-4o", inputMicrosPerMillion: 1_000_000, outputMicrosPerMillion: 4_000_000,
                        cachedInputMicrosPerMillion: nil)
                ],
                ownerID: team.id, actor: owner)
            let table = Data(#"{"house-model": {"litellm_provider": "openai", "input_cost_per_token": 1e-06}}"#.utf8)
            _ = try await runtime.priceStore.importTable(table, models: 1, actor: .operator)
            try await runtime.limits.setLimits(
                UsageLimits(monthlyBudgetMicros: 50_000_000, requestsPerMinute: 600), subject: shared.id,
                ownerID: team.id,
                actor: owner)
            _ = try await runtime.tokens.create(
                kind: .service, userID: nil, workspaceID: team.id, name: "team backend", scopes: [.credentialsRead],
                expiresAt: nil, audit: AuditEntry(actor: owner, action: .tokenCreate, ownerID: team.id))
        }
        _ = try await runtime.limiter.hit("login:backup-test", limit: 10, window: .seconds(60))
        // An AWS integration with an automatic rotation policy and a rotation under way.
        if let first = owners.first {
            let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
            let aws = try await runtime.integrations.create(
                ownerID: first.user, name: "aws rotating", type: .aws, config: [:],
                credentials: .aws(accessKeyID: "AKIAQWERTYUIOPASDFGH", secretAccessKey: secret, sessionToken: nil),
                actor: AuditActor(kind: .user, id: first.user.lowercasedText))
            scenario.credentials[aws.id] = (first.user, [1: secret])
            _ = try await runtime.rotations.setPolicy(
                RotationPolicy(mode: .automatic, everyDays: 30, graceHours: 1), id: aws.id, ownerID: first.user,
                actor: .system)
            _ = try await runtime.rotations.request(id: aws.id, ownerID: first.user, actor: .system, now: Date())
            // And one deleted while its rotation's new key waited to become current: that key is listed for the
            // operator.
            let deleted = try await runtime.integrations.create(
                ownerID: first.user, name: "aws deleted mid-rotation", type: .aws, config: [:],
                credentials: .aws(accessKeyID: "AKIAZXCVBNMLKJHGFDSA", secretAccessKey: secret, sessionToken: nil),
                actor: .system)
            let rotation = try await runtime.rotations.request(
                id: deleted.id, ownerID: first.user, actor: .system, now: Date())
            _ = try await runtime.rotations.storeNew(
                .aws(accessKeyID: "AKIAPOIUYTREWQLKJHGF", secretAccessKey: secret, sessionToken: nil),
                keyID: "AKIAPOIUYTREWQLKJHGF", for: rotation, now: Date())
            try await runtime.integrations.delete(id: deleted.id, ownerID: first.user, actor: .system)
        }
        // Second versions for some, then a rotation, then third versions under the new master key.
        for (user, integration) in owners.prefix(4) {
            let canary = Fixtures.canary("backup-v2")
            _ = try await runtime.integrations.update(
                id: integration, ownerID: user, changes: IntegrationChanges(credentials: .apiKey(canary)),
                actor: AuditActor(kind: .user, id: user.lowercasedText))
            scenario.credentials[integration]?.versions[2] = canary
        }
        _ = try await runtime.audit.checkpoint()
        _ = try await KeyManagement(
            database: runtime.database, source: runtime.configuration.keyring, logger: runtime.logger
        )
        .rotate(batchSize: 3)
        for (user, integration) in owners.prefix(2) {
            let canary = Fixtures.canary("backup-v3")
            _ = try await runtime.integrations.update(
                id: integration, ownerID: user, changes: IntegrationChanges(credentials: .apiKey(canary)),
                actor: AuditActor(kind: .user, id: user.lowercasedText))
            scenario.credentials[integration]?.versions[3] = canary
        }
        _ = try await runtime.integrations.readCredentials(
            id: owners[0].integration, actor: AuditActor(kind: .service, id: "test")
        ) { CredentialAccess.decide(.read, scope: nil, $0) }
        return scenario
    }

    /// Checks that every stored version opens in `runtime` and equals the original; returns the problems found.
    public func problems(in runtime: KeyhavenRuntime) async -> [String] {
        var problems: [String] = []
        for (integration, entry) in credentials {
            for (version, expected) in entry.versions {
                do {
                    let (bytes, _) = try await runtime.secrets.get(
                        SecretOwner(integrationID: integration, ownerID: entry.owner), version: version)
                    let text = bytes.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
                    if !text.contains(expected) { problems.append("\(integration) v\(version) differs") }
                } catch {
                    problems.append("\(integration) v\(version): \(error)")
                }
            }
        }
        return problems
    }

    /// The number of rows in every backed-up table.
    public static func counts(_ database: Database) async throws -> [String: Int64] {
        try await database.withConnection { sql in
            var counts: [String: Int64] = [:]
            for table in BackupSchema.tables {
                counts[table.name] =
                    try await sql.raw("SELECT COUNT(*) AS n FROM \(ident: table.name)").first()?
                    .decode(column: "n", as: Int64.self) ?? -1
            }
            return counts
        }
    }
}

/// A random 32-byte backup key, written to a 0600 file in `directory`; returns its path.
public func makeBackupKeyFile(in directory: String, name: String = "backup.key") throws -> String {
    let path = directory + "/" + name
    let key = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }
    guard FileManager.default.createFile(atPath: path, contents: key, attributes: [.posixPermissions: 0o600]) else {
        throw TestSetupError("cannot write \(path)")
    }
    return path
}

/// A passphrase written to a 0600 file in `directory`; returns its path.
public func makePassphraseFile(in directory: String, passphrase: String, name: String = "passphrase") throws -> String {
    let path = directory + "/" + name
    guard
        FileManager.default.createFile(
            atPath: path, contents: Data((passphrase + "\n").utf8), attributes: [.posixPermissions: 0o600])
    else {
        throw TestSetupError("cannot write \(path)")
    }
    return path
}
