import Foundation
import HTTPTypes
import KeyhavenCore
import KeyhavenTestSupport
import Synchronization
import SQLKit
import Testing

/// Authorization as a property of sequences (STYLE rule 13): a caller who may not read an organization's
/// credentials runs every sequence of up to three calls from a fixed vocabulary (every call that changes where an
/// integration lives, who may act on it, or that uses it) and never ends up with the key, and the organization's
/// usage still counts every call made on its integration while it was the organization's.
@Suite("Composed authorization")
struct ComposedAuthorizationTests {
    /// The caller's standing in the victim's organization. Owners and admins are left out: they may mint a service
    /// token there and read the key by design.
    enum Role: String, CaseIterable, CustomStringConvertible {
        case member, viewer, outsider, removedMember
        var description: String { rawValue }
    }

    /// The workspaces a call can name: the caller's personal workspace, the victim's organization, and a third
    /// organization the caller owns.
    enum Place: String, CaseIterable, CustomStringConvertible {
        case own, victim, third
        var description: String { rawValue }
    }

    /// One call of the vocabulary.
    enum Step: CustomStringConvertible, Hashable {
        case move(to: Place)
        case serviceToken(in: Place)
        case personalToken
        case inviteSelfAsAdmin
        case acceptInvitation
        case promoteSelf
        case replaceCredentials
        case rotate
        case gatewayCall
        case reportUsage
        /// Not a step of its own: taken after every step, with every token the caller holds.
        case readCredentials

        static let all: [Step] =
            Place.allCases.map { .move(to: $0) } + Place.allCases.map { .serviceToken(in: $0) }
            + [
                .personalToken, .inviteSelfAsAdmin, .acceptInvitation, .promoteSelf, .replaceCredentials, .rotate,
                .gatewayCall, .reportUsage,
            ]

        var description: String {
            switch self {
            case .move(let place): "move→\(place)"
            case .serviceToken(let place): "service-token@\(place)"
            case .personalToken: "personal-token"
            case .inviteSelfAsAdmin: "invite-self-as-admin"
            case .acceptInvitation: "accept-invitation"
            case .promoteSelf: "promote-self"
            case .replaceCredentials: "replace-credentials"
            case .rotate: "rotate"
            case .gatewayCall: "gateway-call"
            case .reportUsage: "report-usage"
            case .readCredentials: "read-credentials"
            }
        }
    }

    /// Every sequence of one to `length` steps.
    static func sequences(upTo length: Int) -> [[Step]] {
        var result: [[Step]] = []
        var frontier: [[Step]] = [[]]
        for _ in 0..<length {
            frontier = frontier.flatMap { prefix in Step.all.map { prefix + [$0] } }
            result += frontier
        }
        return result
    }

    /// The people and workspaces every sequence shares.
    struct World {
        let owner: TestUser
        let attacker: TestUser
        let third: UUID
    }

    /// What one sequence left behind, as seen by the caller.
    struct Run {
        let organization: UUID
        let integration: UUID
        let victimToken: String
        var tokens: [String] = []
        var invitation: String?
        /// Where the integration is now, as the answers to the caller's moves said.
        var location: Place = .victim
        /// Gateway calls and usage reports that succeeded while the integration was in the victim's organization.
        var counted = 0
        var responses: [APIResponse] = []
    }

    /// The key the victim stored: the fakes accept it, so gateway calls made with it succeed.
    static let key = FakeProviders.openAIKey

    @Test(
        "no sequence of up to three calls gives a member, viewer, outsider or removed member an organization's key, and its usage counts every call on it",
        arguments: TestDatabase.all)
    func sequencesNeverLeak(kind: TestDatabase) async throws {
        let fakes = try await FakeProviders.start()
        do {
            // Thousands of requests of a dozen kinds: the first ones are enough for the contract check.
            try await APIHarness.with(
                kind, checkedResponses: 5_000,
                configure: {
                    $0.providerEndpoints = fakes.endpoints()
                    $0.checkRateLimit = .init(perUser: 1_000_000)
                }
            ) { api in
                try await run(api, kind: kind)
            }
        } catch {
            await fakes.stop()
            throw error
        }
        await fakes.stop()
    }

    func run(_ api: APIHarness, kind: TestDatabase) async throws {
        let world = World(
            owner: try await api.user(), attacker: try await api.user(), third: try await Self.organization(api, by: nil))
        // The third organization is the caller's own.
        try await Self.addMember(api, world.attacker.id, .owner, to: world.third)
        let sequences = Self.sequences(upTo: 3)
        let failures = Shared<[String]>([])
        let expected = Shared<[UUID: (organization: UUID, requests: Int, label: String)]>([:])
        var ran = 0
        for role in Role.allCases {
            // A few sequences at a time, each in an organization of its own: on SQLite their writes share commits.
            try await withThrowingTaskGroup(of: Void.self) { group in
                var next = sequences.makeIterator()
                func start() -> Bool {
                    guard let sequence = next.next() else { return false }
                    group.addTask {
                        let label = "\(role): \(sequence.map(\.description).joined(separator: ", "))"
                        var run = try await Self.setUp(api, world: world, role: role)
                        for step in sequence {
                            try await Self.take(step, api: api, world: world, run: &run)
                            // Whatever the step did, every token the caller holds tries to read the key.
                            try await Self.take(.readCredentials, api: api, world: world, run: &run)
                        }
                        if let leak = run.responses.first(where: { $0.text.contains(Self.key) }) {
                            failures.withLock { $0.append("\(label): the key came back (\(leak.status))") }
                        }
                        // The organization's own backend calls the gateway, as it does all day.
                        let call = try await Self.gatewayCall(api, run.integration, token: run.victimToken)
                        if call.status.code / 100 == 2 && run.location == .victim { run.counted += 1 }
                        expected.withLock { $0[run.integration] = (run.organization, run.counted, label) }
                    }
                    return true
                }
                for _ in 0..<4 where start() {}
                while try await group.next() != nil { _ = start() }
            }
            ran += sequences.count
        }
        // Usage is written behind the answers: wait until every call made is recorded (or 60 s), then compare
        // integration by integration.
        let wanted = expected.withLock { $0 }
        let total = wanted.values.reduce(0) { $0 + $1.requests }
        var recorded: [UUID: (owner: UUID, requests: Int)] = [:]
        for _ in 0..<600 {
            recorded = try await Self.recordedRequests(api)
            if recorded.values.reduce(0, { $0 + $1.requests }) >= total { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        for (integration, want) in wanted {
            let got = recorded[integration]
            let requests = got?.owner == want.organization ? got?.requests ?? 0 : 0
            if requests != want.requests || (got != nil && got?.owner != want.organization) {
                failures.withLock {
                    $0.append(
                        "\(want.label): the organization's usage holds \(requests) requests, \(want.requests) were made")
                }
            }
        }
        print(
            "composed authorization on \(kind): \(ran) sequences of up to 3 calls from \(Step.all.count) kinds, as \(Role.allCases.count) roles; \(total) gateway calls and reports counted"
        )
        #expect(ran == sequences.count * Role.allCases.count)
        let found = failures.withLock { $0 }
        #expect(found.isEmpty, "\(found.count) failures, first: \(found.prefix(20).joined(separator: "\n"))")
    }

    /// A value the concurrent sequences add to.
    final class Shared<Value: Sendable>: Sendable {
        private let value: Mutex<Value>
        init(_ value: Value) { self.value = Mutex(value) }
        func withLock<T>(_ body: (inout Value) -> T) -> T { value.withLock { body(&$0) } }
    }

    /// Requests recorded per integration, with the workspace they were recorded in.
    static func recordedRequests(_ api: APIHarness) async throws -> [UUID: (owner: UUID, requests: Int)] {
        try await api.runtime.database.withConnection { sql in
            var result: [UUID: (owner: UUID, requests: Int)] = [:]
            for row in try await sql.raw(
                "SELECT integration_id, owner_id, requests FROM usage_daily"
            ).all() {
                let integration = try row.decode(column: "integration_id", as: UUID.self)
                let owner = try row.decode(column: "owner_id", as: UUID.self)
                let requests = try row.decode(column: "requests", as: Int.self)
                // Recorded in another workspace too: kept apart, so the comparison sees the difference.
                if let seen = result[integration], seen.owner != owner {
                    result[integration] = (UUID(), seen.requests + requests)
                } else {
                    result[integration] = (owner, (result[integration]?.requests ?? 0) + requests)
                }
            }
            return result
        }
    }

    /// A new organization owned by `owner` (by the operator when nil; nobody in the tests then), made in the store.
    static func organization(_ api: APIHarness, by owner: TestUser?) async throws -> UUID {
        let creator: UUID
        if let owner { creator = owner.id } else { creator = try await api.user().id }
        let organization = try await api.runtime.organizations.create(
            name: "org \(UUID().uuidString.prefix(8))", by: creator, actor: .system)
        return organization.id
    }

    static func addMember(_ api: APIHarness, _ user: UUID, _ role: WorkspaceRole, to organization: UUID) async throws {
        try await api.runtime.database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO memberships (id, organization_id, user_id, role, created_at, updated_at)
                VALUES (\(bind: UUID()), \(bind: organization), \(bind: user), \(bind: role.rawValue), \(bind: Date()), \
                \(bind: Date()))
                ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role
                """
            ).run()
        }
    }

    /// A new organization of the owner's with one OpenAI integration holding ``key``, its backend's service token,
    /// and the attacker in `role`.
    static func setUp(_ api: APIHarness, world: World, role: Role) async throws -> Run {
        let organization = try await Self.organization(api, by: world.owner)
        switch role {
        case .member: try await addMember(api, world.attacker.id, .member, to: organization)
        case .viewer: try await addMember(api, world.attacker.id, .viewer, to: organization)
        case .outsider: break
        case .removedMember:
            try await addMember(api, world.attacker.id, .admin, to: organization)
            try await api.runtime.organizations.remove(
                world.attacker.id, from: organization, allowOwners: false, actor: .system)
        }
        // A name of its own: a move into a workspace holding the same name would be refused for the name alone.
        let integration = try await api.runtime.integrations.create(
            ownerID: organization, name: "shared \(UUID().uuidString.prefix(8))", type: .openai, config: [:],
            credentials: .apiKey(key), actor: .system)
        let (token, _) = try await api.runtime.tokens.create(
            kind: .service, userID: nil, workspaceID: organization, name: "backend",
            scopes: TokenScope.service, expiresAt: nil, audit: AuditEntry(actor: .operator, action: .tokenCreate))
        return Run(organization: organization, integration: integration.id, victimToken: token)
    }

    static func workspace(_ place: Place, _ world: World, _ run: Run) -> String {
        switch place {
        case .own: world.attacker.id.lowercased
        case .victim: run.organization.lowercased
        case .third: world.third.lowercased
        }
    }

    static func take(_ step: Step, api: APIHarness, world: World, run: inout Run) async throws {
        let caller = world.attacker.session
        let integration = "/api/integrations/\(run.integration.lowercased)"
        let organization = "/api/orgs/\(run.organization.lowercased)"
        var answers: [APIResponse] = []
        switch step {
        case .move(let place):
            let answer = try await api.request(
                .post, "\(integration)/move", auth: caller, json: ["workspace_id": workspace(place, world, run)])
            if answer.status == .ok { run.location = place }
            answers.append(answer)
        case .serviceToken(let place):
            let answer = try await api.request(
                .post, "/api/orgs/\(workspace(place, world, run))/service-tokens", auth: caller,
                json: ["name": "mine", "scopes": TokenScope.service.map(\.rawValue).sorted()])
            if let secret = answer.json["secret"] as? String { run.tokens.append(secret) }
            answers.append(answer)
        case .personalToken:
            let answer = try await api.request(
                .post, "/api/tokens", auth: caller,
                json: ["name": "mine", "scopes": TokenScope.allCases.map(\.rawValue).sorted()])
            if let secret = answer.json["secret"] as? String { run.tokens.append(secret) }
            answers.append(answer)
        case .inviteSelfAsAdmin:
            let answer = try await api.request(
                .post, "\(organization)/invitations", auth: caller,
                json: ["email": world.attacker.email, "role": "admin"])
            if let token = answer.json["token"] as? String { run.invitation = token }
            answers.append(answer)
        case .acceptInvitation:
            answers.append(
                try await api.request(
                    .post, "/api/invitations/accept", auth: caller,
                    json: ["token": run.invitation ?? "kh_inv_\(String(repeating: "a", count: 43))"]))
        case .promoteSelf:
            answers.append(
                try await api.request(
                    .patch, "\(organization)/members/\(world.attacker.id.lowercased)", auth: caller,
                    json: ["role": "admin"]))
        case .replaceCredentials:
            answers.append(
                try await api.request(
                    .put, integration, auth: caller, json: ["credentials": "sk-attacker-\(UUID().uuidString)"]))
        case .rotate:
            answers.append(try await api.request(.post, "\(integration)/rotate", auth: caller))
        case .gatewayCall:
            for token in run.tokens {
                let answer = try await gatewayCall(api, run.integration, token: token)
                if answer.status.code / 100 == 2 && run.location == .victim { run.counted += 1 }
                answers.append(answer)
            }
        case .reportUsage:
            for token in run.tokens {
                let answer = try await api.request(
                    .post, "\(integration)/usage", auth: .bearer(token),
                    json: [
                        "model": "gpt-4o-mini", "input_tokens": 1, "output_tokens": 1,
                        "idempotency_key": UUID().uuidString,
                    ])
                if answer.status == .created && run.location == .victim { run.counted += 1 }
                answers.append(answer)
            }
        case .readCredentials:
            for token in run.tokens {
                answers.append(try await api.request(.get, "\(integration)/credentials", auth: .bearer(token)))
            }
        }
        run.responses += answers
    }

    static func gatewayCall(_ api: APIHarness, _ integration: UUID, token: String) async throws -> APIResponse {
        try await api.request(
            .post, "/gateway/\(integration.lowercased)/v1/chat/completions", auth: .bearer(token),
            json: ["model": "gpt-4o-mini", "messages": [["role": "user", "content": "hi"]]])
    }
}
