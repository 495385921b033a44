import Foundation
import HTTPTypes
import KeyhavenCore
import KeyhavenTestSupport
import SQLKit
import Synchronization
import Testing

/// Authorization as a property of sequences (STYLE rule 13): a caller who may not read an organization's
/// credentials runs every sequence of up to three calls from a fixed vocabulary (every call that changes where an
/// integration lives, who may act on it, or that uses it) and never ends up with the key, and the organization's
/// usage still counts every call made on its integration while it was the organization's.
@Suite("Composed authorization")
struct ComposedAuthorizationTests {
    /// The caller's standing in the victim's organization. Owners and admins are left out: they may mint a service
    /// token there and read the key by design.
    /// Someone who never was a member meets the same answers as a removed one (the policy sees no role for
    /// either), so the removed member stands for both.
    enum Role: String, CaseIterable, CustomStringConvertible {
        case member, viewer, removedMember
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
        case confirmSelf
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
                .personalToken, .inviteSelfAsAdmin, .acceptInvitation, .confirmSelf, .promoteSelf, .replaceCredentials,
                .rotate,
                .gatewayCall, .reportUsage,
            ]

        var description: String {
            switch self {
            case .move(let place): "move→\(place)"
            case .serviceToken(let place): "service-token@\(place)"
            case .personalToken: "personal-token"
            case .inviteSelfAsAdmin: "invite-self-as-admin"
            case .acceptInvitation: "accept-invitation"
            case .confirmSelf: "confirm-self"
            case .promoteSelf: "promote-self"
            case .replaceCredentials: "replace-credentials"
            case .rotate: "rotate"
            case .gatewayCall: "gateway-call"
            case .reportUsage: "report-usage"
            case .readCredentials: "read-credentials"
            }
        }
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
        /// Gateway calls the provider answered and usage reports taken while the integration was in the victim's
        /// organization.
        var counted = 0
        /// Whether the caller replaced the key (with one the provider refuses).
        var replaced = false
        var responses: [APIResponse] = []
    }

    /// The key the victim stored: the fakes accept it, so gateway calls made with it succeed.
    static let key = FakeProviders.openAIKey

    @Test(
        """
        no sequence of up to three calls gives a member, viewer or removed \
        member an organization's key, and its usage counts every call on it
        """,
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
            owner: try await api.user(), attacker: try await api.user(),
            third: try await Self.organization(api, by: nil))
        // The third organization is the caller's own.
        try await Self.addMember(api, world.attacker.id, .owner, to: world.third)
        let length = 3
        let failures = Shared<[String]>([])
        let expected = Shared<[UUID: (organization: UUID, requests: Int, label: String)]>([:])
        var ran = 0
        var equivalent = 0
        for role in Role.allCases {
            // Breadth first: the sequences of one more step extend only those whose every step changed something.
            // A step that was refused and left the state as it found it (``Fingerprint``) makes its sequence, and
            // every sequence going on from it, the same as the sequence without that step, which is run anyway.
            var prefixes: [[Step]] = [[]]
            for _ in 0..<length {
                let sequences = prefixes.flatMap { prefix in Step.all.map { prefix + [$0] } }
                let extended = Shared<[[Step]]>([])
                // Several at a time, each in an organization of its own: on SQLite their writes share commits.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    var next = sequences.makeIterator()
                    func start() -> Bool {
                        guard let sequence = next.next() else { return false }
                        group.addTask {
                            let label = "\(role): \(sequence.map(\.description).joined(separator: ", "))"
                            var run = try await Self.setUp(api, world: world, role: role)
                            var changed = true
                            for step in sequence {
                                let before = try await Fingerprint(api, world, run)
                                let answered = run.responses.count
                                try await Self.take(step, api: api, world: world, run: &run)
                                let accepted = run.responses[answered...].contains { $0.status.code / 100 == 2 }
                                let after = try await Fingerprint(api, world, run)
                                changed = accepted || after != before
                                // Whatever the step did, every token the caller holds tries to read the key.
                                try await Self.take(.readCredentials, api: api, world: world, run: &run)
                            }
                            if changed { extended.withLock { $0.append(sequence) } }
                            if let leak = run.responses.first(where: { $0.text.contains(Self.key) }) {
                                failures.withLock { $0.append("\(label): the key came back (\(leak.status))") }
                            }
                            // The organization's own backend calls the gateway, as it does all day. The provider
                            // answers it (and its usage is recorded): with the key, or refusing the caller's
                            // replacement.
                            let call = try await Self.gatewayCall(api, run.integration, token: run.victimToken)
                            let answered = call.status.code / 100 == 2 || (run.replaced && call.status == .unauthorized)
                            if answered && run.location == .victim { run.counted += 1 }
                            expected.withLock { $0[run.integration] = (run.organization, run.counted, label) }
                        }
                        return true
                    }
                    for _ in 0..<8 where start() {}
                    while try await group.next() != nil { _ = start() }
                }
                ran += sequences.count
                prefixes = extended.withLock { $0 }
                equivalent +=
                    (sequences.count - prefixes.count) * Self.continuations(after: sequences[0].count, upTo: length)
            }
        }
        let total = Self.continuations(after: 0, upTo: length) * Role.allCases.count
        // Usage is written behind the answers: wait until every integration's usage is as expected (or 60 s), then
        // compare integration by integration.
        let wanted = expected.withLock { $0 }
        let calls = wanted.values.reduce(0) { $0 + $1.requests }
        func matches(_ recorded: [UUID: (owner: UUID, requests: Int)]) -> Bool {
            wanted.allSatisfy { integration, want in
                let got = recorded[integration]
                return (got?.requests ?? 0) == want.requests && (got == nil || got?.owner == want.organization)
            }
        }
        var recorded = try await Self.recordedRequests(api)
        for _ in 0..<600 where !matches(recorded) {
            try await Task.sleep(for: .milliseconds(100))
            recorded = try await Self.recordedRequests(api)
        }
        for (integration, want) in wanted {
            let got = recorded[integration]
            let requests = got?.owner == want.organization ? got?.requests ?? 0 : 0
            if requests != want.requests || (got != nil && got?.owner != want.organization) {
                failures.withLock {
                    $0.append(
                        "\(want.label): the organization's usage holds \(requests) requests, \(want.requests) were made"
                    )
                }
            }
        }
        print(
            "composed authorization on \(kind): \(total) sequences of up to \(length) calls from "
                + "\(Step.all.count) kinds as \(Role.allCases.count) roles: \(ran) run, \(equivalent) the same as a "
                + "shorter one run (a refused step that changed nothing); \(calls) gateway calls and reports counted"
        )
        #expect(ran + equivalent == total)
        let found = failures.withLock { $0 }
        #expect(found.isEmpty, "\(found.count) failures, first: \(found.prefix(20).joined(separator: "\n"))")
    }

    /// How many sequences of up to `length` steps go on from one of `steps` steps.
    static func continuations(after steps: Int, upTo length: Int) -> Int {
        guard steps < length else { return 0 }
        return (1...(length - steps)).reduce(0) { sum, more in sum + Int(pow(Double(Step.all.count), Double(more))) }
    }

    /// Everything that decides what the caller may do next: where the integration is and its row (a changed key
    /// changes `updated_at`), the caller's memberships and roles, the victim's invitations, and what the caller
    /// holds (tokens, an invitation token). Usage is not in it: a step that records usage was answered 2xx, which
    /// counts as a change by itself.
    struct Fingerprint: Equatable {
        let rows: [String]
        let held: [String]

        init(_ api: APIHarness, _ world: World, _ run: Run) async throws {
            rows = try await api.runtime.database.withConnection { sql in
                var rows: [String] = []
                for row in try await sql.raw(
                    "SELECT owner_id, updated_at, enabled FROM integrations WHERE id = \(bind: run.integration)"
                ).all() {
                    rows.append(
                        "integration \(try row.decode(column: "owner_id", as: UUID.self)) "
                            + "\(try row.decode(column: "updated_at", as: Date.self).timeIntervalSince1970) "
                            + "\(try row.decode(column: "enabled", as: Bool.self))"
                    )
                }
                for row in try await sql.raw(
                    """
                    SELECT organization_id, role, pending_confirmation FROM memberships
                    WHERE user_id = \(bind: world.attacker.id)
                    AND organization_id IN (\(bind: run.organization), \(bind: world.third))
                    """
                ).all() {
                    rows.append(
                        "member \(try row.decode(column: "organization_id", as: UUID.self)) "
                            + "\(try row.decode(column: "role", as: String.self)) "
                            + "\(try row.decode(column: "pending_confirmation", as: Bool.self))"
                    )
                }
                for row in try await sql.raw(
                    """
                    SELECT id, accepted_at, revoked_at FROM invitations \
                    WHERE organization_id = \(bind: run.organization)
                    """
                ).all() {
                    rows.append(
                        "invitation \(try row.decode(column: "id", as: UUID.self)) "
                            + "\(try row.decode(column: "accepted_at", as: Date?.self) != nil) "
                            + "\(try row.decode(column: "revoked_at", as: Date?.self) != nil)"
                    )
                }
                return rows.sorted()
            }
            held = run.tokens + [run.invitation ?? "", run.location.rawValue, "\(run.replaced)"]
        }
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
                VALUES (\(bind: UUID()), \(bind: organization), \(bind: user), \(bind: role.rawValue), \
                \(bind: Date()), \(bind: Date()))
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
                json: ["name": "mine", "scopes": ["integrations:read", "integrations:write"]])
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
        case .confirmSelf:
            answers.append(
                try await api.request(
                    .post, "\(organization)/members/\(world.attacker.id.lowercased)/confirm", auth: caller))
        case .promoteSelf:
            answers.append(
                try await api.request(
                    .patch, "\(organization)/members/\(world.attacker.id.lowercased)", auth: caller,
                    json: ["role": "admin"]))
        case .replaceCredentials:
            let answer = try await api.request(
                .put, integration, auth: caller, json: ["credentials": "sk-attacker-\(UUID().uuidString)"])
            if answer.status == .ok { run.replaced = true }
            answers.append(answer)
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
