import Foundation
import KeyhavenCore
import Synchronization

// Stores kept in memory, for the services' tests: each keeps what a service reads and writes, decides nothing the
// service is responsible for, and answers a call the tests do not expect with an error, so a test that reaches one
// fails loudly.

/// What a memory store throws for a call no test should make.
func unexpected(_ call: String = #function) -> KeyhavenError { .unavailable("not kept in memory: \(call)") }

/// Audit entries, appended in order.
final class MemoryAuditLog: AuditLog {
    let entries = Mutex<[AuditEntry]>([])

    func append(_ entry: AuditEntry) async throws { entries.withLock { $0.append(entry) } }

    func events(
        ownerID: UUID, integrationID: UUID?, integrationsOnly: Bool, limit: Int, before: Int64?
    ) async throws -> [AuditEvent] { throw unexpected() }

    func verify() async throws -> AuditVerification { throw unexpected() }

    /// The `reason` of every denied event, with the workspace it was recorded in.
    var denials: [(reason: String, ownerID: UUID?)] {
        entries.withLock { entries in
            entries.filter { $0.outcome == .denied }.map { entry in
                guard case .string(let reason)? = entry.detail["reason"] else { return ("", entry.ownerID) }
                return (reason, entry.ownerID)
            }
        }
    }
}

/// Counters per key, with no window: a limit counts every hit.
final class MemoryRateLimiter: RateLimiter {
    let hits = Mutex<[String: Int]>([:])

    func hit(_ key: String, limit: Int, window: Duration) async throws -> RateDecision {
        let count = hits.withLock { hits in
            hits[key, default: 0] += 1
            return hits[key, default: 0]
        }
        return count > limit ? .limited(retryAfterSeconds: 1) : .allowed
    }

    func reset(_ key: String) async throws { hits.withLock { $0[key] = nil } }

    /// Hits counted under keys that start with `prefix`.
    func count(_ prefix: String) -> Int { hits.withLock { $0.filter { $0.key.hasPrefix(prefix) }.values.reduce(0, +) } }
}

/// Integrations with their credentials, owners that may be disabled, and the roles of users in workspaces (a user
/// owns their personal workspace).
final class MemoryWorkspaces: IntegrationStore, OrganizationStore {
    struct Stored {
        var integration: Integration
        var credentials: Credentials
    }

    let integrations = Mutex<[UUID: Stored]>([:])
    let roles = Mutex<[UUID: [UUID: WorkspaceRole]]>([:])
    let disabledOwners = Mutex<Set<UUID>>([])
    let audit: MemoryAuditLog

    init(audit: MemoryAuditLog) { self.audit = audit }

    /// Gives `user` `role` in `workspace`.
    func grant(_ role: WorkspaceRole, to user: UUID, in workspace: UUID) {
        roles.withLock { $0[workspace, default: [:]][user] = role }
    }

    /// Stores an enabled OpenAI integration in `workspace`.
    @discardableResult
    func add(in workspace: UUID, type: IntegrationType = .openai, enabled: Bool = true) -> Integration {
        let now = Date()
        var integration = Integration(
            id: UUID(), ownerID: workspace, name: "integration \(UUID())", type: type, status: .connected,
            enabled: enabled, config: [:], credentialHint: nil, credentialVersion: 1, errorMessage: nil,
            lastVerifiedAt: nil, lastUsedAt: nil, createdAt: now, updatedAt: now)
        integration.credentialsChangedAt = now
        integrations.withLock {
            $0[integration.id] = Stored(integration: integration, credentials: .apiKey("sk-memory"))
        }
        return integration
    }

    private func stored(_ id: UUID, ownerID: UUID? = nil) throws -> Stored {
        guard let stored = integrations.withLock({ $0[id] }), ownerID.map({ $0 == stored.integration.ownerID }) ?? true
        else { throw KeyhavenError.notFound }
        return stored
    }

    private func target(_ stored: Stored) -> CredentialTarget {
        let owner = stored.integration.ownerID
        return CredentialTarget(
            integration: stored.integration, ownerDisabled: disabledOwners.withLock { $0.contains(owner) })
    }

    // MARK: IntegrationStore

    func create(
        ownerID: UUID, name: String, type: IntegrationType, config: [String: JSONValue], credentials: Credentials,
        rotation: RotationPolicy, counting check: RateCount?, actor: AuditActor
    ) async throws -> Integration {
        // The memory limiter counts outside any transaction: the service has counted already.
        guard check == nil else { throw KeyhavenError.internalError }
        var integration = add(in: ownerID, type: type)
        integration.name = name
        integrations.withLock { $0[integration.id]?.integration.name = name }
        return integration
    }

    func list(ownerID: UUID, limit: Int, after cursor: UUID?) async throws -> [Integration] {
        let all = integrations.withLock { $0.values.map(\.integration) }.filter { $0.ownerID == ownerID }
            .sorted { $0.id.uuidString > $1.id.uuidString }
        let start = cursor.flatMap { cursor in all.firstIndex { $0.id == cursor }.map { $0 + 1 } } ?? 0
        return Array(all.dropFirst(start).prefix(limit))
    }

    func get(id: UUID, ownerID: UUID) async throws -> Integration { try stored(id, ownerID: ownerID).integration }

    func update(id: UUID, ownerID: UUID, changes: IntegrationChanges, actor: AuditActor) async throws -> Integration {
        _ = try stored(id, ownerID: ownerID)
        return integrations.withLock { all in
            if let name = changes.name { all[id]?.integration.name = name }
            if let enabled = changes.enabled { all[id]?.integration.enabled = enabled }
            if let credentials = changes.credentials { all[id]?.credentials = credentials }
            return all[id]!.integration
        }
    }

    func delete(id: UUID, ownerID: UUID, actor: AuditActor) async throws {
        _ = try stored(id, ownerID: ownerID)
        integrations.withLock { $0[id] = nil }
    }

    func readCredentials(
        id: UUID, actor: AuditActor, decide: @escaping @Sendable (CredentialTarget) -> CredentialDenial?
    ) async throws -> (Integration, Credentials) {
        func record(_ reason: String, _ owner: UUID?, _ outcome: AuditOutcome) async throws {
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .credentialsRead, outcome: outcome, ownerID: owner, integrationID: id,
                    detail: ["reason": .string(reason)]))
        }
        guard let stored = try? stored(id) else {
            try await record("not_found", nil, .denied)
            throw KeyhavenError.notFound
        }
        if let denial = decide(target(stored)) {
            try await record(denial.reason, denial.recordedIn, .denied)
            throw denial.error
        }
        try await audit.append(
            AuditEntry(actor: actor, action: .credentialsRead, ownerID: stored.integration.ownerID, integrationID: id))
        return (stored.integration, stored.credentials)
    }

    func find(id: UUID) async throws -> Integration { try stored(id).integration }

    func gatewayTarget(id: UUID, decide: (CredentialTarget) -> CredentialDenial?) async throws -> (
        Integration, Credentials
    ) {
        let stored = try stored(id)
        if let denial = decide(target(stored)) { throw denial.error }
        return (stored.integration, stored.credentials)
    }

    func find(id: UUID, for userID: UUID) async throws -> (Integration, WorkspaceRole?) {
        let integration = try stored(id).integration
        return (integration, try await role(of: userID, in: integration.ownerID))
    }

    func move(id: UUID, from source: UUID, to target: UUID, actor: AuditActor) async throws -> Integration {
        _ = try stored(id, ownerID: source)
        return integrations.withLock { all in
            all[id]?.integration.ownerID = target
            return all[id]!.integration
        }
    }

    // MARK: OrganizationStore (roles, and removing a member, are all the tests use)

    func role(of userID: UUID, in workspaceID: UUID) async throws -> WorkspaceRole? {
        userID == workspaceID ? .owner : roles.withLock { $0[workspaceID]?[userID] }
    }

    func remove(_ userID: UUID, from organizationID: UUID, allowOwners: Bool, actor: AuditActor) async throws {
        let role = roles.withLock { $0[organizationID]?[userID] }
        guard let role else { throw KeyhavenError.notFound }
        if role == .owner && !allowOwners { throw KeyhavenError.forbidden("owners") }
        roles.withLock { $0[organizationID]?[userID] = nil }
    }

    func create(name: String, by userID: UUID, actor: AuditActor) async throws -> Organization { throw unexpected() }
    func list(userID: UUID) async throws -> [(Organization, WorkspaceRole)] { throw unexpected() }
    func get(id: UUID) async throws -> Organization { throw unexpected() }
    func rename(id: UUID, to name: String, actor: AuditActor) async throws -> Organization { throw unexpected() }
    func delete(id: UUID, confirmation: String, actor: AuditActor) async throws { throw unexpected() }
    func members(of organizationID: UUID) async throws -> [Member] { throw unexpected() }
    func setRole(
        _ role: WorkspaceRole, of userID: UUID, in organizationID: UUID, allowOwners: Bool, actor: AuditActor
    ) async throws -> Member { throw unexpected() }
    func invite(
        email: String, role: WorkspaceRole, to organizationID: UUID, actor: AuditActor, now: Date
    ) async throws -> (token: String, invitation: Invitation) { throw unexpected() }
    func invitations(of organizationID: UUID, now: Date) async throws -> [Invitation] { throw unexpected() }
    func revokeInvitation(id: UUID, in organizationID: UUID, actor: AuditActor) async throws { throw unexpected() }
    func accept(token: String, user: User, actor: AuditActor, now: Date) async throws -> (Organization, Member) {
        throw unexpected()
    }
    func confirm(_ userID: UUID, in organizationID: UUID, allowOwners: Bool, actor: AuditActor) async throws -> Member {
        throw unexpected()
    }
}

/// Service tokens by their secret.
final class MemoryTokens: TokenStore {
    let tokens = Mutex<[String: APIToken]>([:])

    /// A service token with `scopes`, limited to `workspace` if given; returns its secret.
    func serviceToken(_ scopes: Set<TokenScope>, workspace: UUID? = nil) -> (String, APIToken) {
        var token = APIToken(
            id: UUID(), kind: .service, userID: nil, name: "memory", scopes: scopes, createdAt: Date(),
            lastUsedAt: nil, expiresAt: nil, revokedAt: nil)
        token.workspaceID = workspace
        let secret = "kh_svc_" + UUID().uuidString
        tokens.withLock { $0[secret] = token }
        return (secret, token)
    }

    func authenticate(token: String) async throws -> (record: APIToken, user: User?)? {
        tokens.withLock { $0[token] }.map { ($0, nil) }
    }

    func create(
        kind: APIToken.Kind, userID: UUID?, workspaceID: UUID?, name: String, scopes: Set<TokenScope>, expiresAt: Date?,
        audit: AuditEntry
    ) async throws -> (token: String, record: APIToken) { throw unexpected() }
    func list(userID: UUID) async throws -> [APIToken] { throw unexpected() }
    func revoke(id: UUID, userID: UUID?, audit: AuditEntry) async throws { throw unexpected() }
    func serviceTokens(workspaceID: UUID) async throws -> [APIToken] { throw unexpected() }
    func revokeServiceToken(id: UUID, workspaceID: UUID, audit: AuditEntry) async throws { throw unexpected() }
}

/// Rotations and tests that only say they were started.
final class MemoryRotations: RotationStore, IntegrationTester {
    let started = Mutex<[UUID]>([])

    func request(id: UUID, ownerID: UUID, actor: AuditActor, now: Date) async throws -> RotationRecord {
        started.withLock { $0.append(id) }
        throw KeyhavenError.conflict("rotations are counted, not run, in memory")
    }

    func testNow(id: UUID, ownerID: UUID, actor: AuditActor) async throws -> VerificationRecord {
        started.withLock { $0.append(id) }
        return VerificationRecord(
            outcome: .connected, errorMessage: nil, details: [:], checkedAt: Date(), latency: .zero)
    }

    func setPolicy(_ policy: RotationPolicy, id: UUID, ownerID: UUID, actor: AuditActor) async throws -> Integration {
        throw unexpected()
    }
    func rotations(integrationID: UUID, ownerID: UUID, limit: Int) async throws -> [RotationRecord] {
        throw unexpected()
    }
}

/// No limits on anything: the gateway's admission always passes.
final class MemoryLimits: LimitStore {
    func limits(for subjects: [UUID]) async throws -> [UUID: UsageLimits] { [:] }
    func setLimits(_ limits: UsageLimits, subject: UUID, ownerID: UUID, actor: AuditActor) async throws {
        throw unexpected()
    }
    func spent(ownerID: UUID, integrationID: UUID?, since: Date) async throws -> Int64 { 0 }
    func count(subject: UUID, window: Int64, requests: Int64, tokens: Int64) async throws -> (
        requests: Int64, tokens: Int64
    ) { (requests, tokens) }
    func warnOnce(subject: UUID, ownerID: UUID, integrationID: UUID?, month: String, spent: Int64, budget: Int64)
        async throws -> Bool
    { false }
}

/// No secrets: the services' tests never open one.
final class MemorySecrets: SecretStore {
    func put(_ plaintext: SecretBytes, for owner: SecretOwner) async throws -> SecretVersionInfo { throw unexpected() }
    func get(_ owner: SecretOwner, version: Int?) async throws -> (SecretBytes, SecretVersionInfo) {
        throw unexpected()
    }
    func versions(of owner: SecretOwner) async throws -> [SecretVersionInfo] { throw unexpected() }
    func destroyAll(_ owner: SecretOwner) async throws -> Int { throw unexpected() }
}

/// No fallback routes.
final class MemoryRoutes: RouteStore {
    func route(name: String, ownerID: UUID) async throws -> GatewayRoute { throw KeyhavenError.notFound }
    func routes(ownerID: UUID) async throws -> [GatewayRoute] { [] }
    func put(_ route: GatewayRoute, actor: AuditActor) async throws { throw unexpected() }
    func delete(name: String, ownerID: UUID, actor: AuditActor) async throws { throw unexpected() }
}
