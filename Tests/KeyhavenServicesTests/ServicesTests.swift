import Foundation
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices
import Synchronization
import Testing

/// The services over stores kept in memory: what each decides, and in which order, without a database or HTTP.
struct Services {
    let audit = MemoryAuditLog()
    let workspaces: MemoryWorkspaces
    let tokens = MemoryTokens()
    let limiter = MemoryRateLimiter()
    let rotations = MemoryRotations()

    init() {
        workspaces = MemoryWorkspaces(audit: audit)
    }

    var access: WorkspaceAccess { WorkspaceAccess(integrations: workspaces, organizations: workspaces) }

    var credentials: CredentialAccess {
        CredentialAccess(
            integrations: workspaces, tokens: tokens, audit: audit, budgets: Budgets(store: MemoryLimits()),
            routes: MemoryRoutes())
    }

    func integrations(checks: Int = 100) -> IntegrationService {
        IntegrationService(
            integrations: workspaces, secrets: MemorySecrets(), audit: audit, rotations: rotations, tester: rotations,
            limiter: limiter, checks: CheckRateLimit(perUser: checks), access: access)
    }

    var organizations: OrganizationService {
        OrganizationService(organizations: workspaces, tokens: tokens, access: access)
    }

    /// A signed-in user: by browser session, or by personal access token with `scopes`.
    static func caller(_ id: UUID = UUID(), scopes: Set<TokenScope>? = nil) -> UserCaller {
        let user = User(id: id, email: "\(id)@example.com", externalSubject: nil, createdAt: Date())
        guard let scopes else {
            let session = Session(
                id: UUID().uuidString, userID: id, csrfToken: "csrf", expiresAt: Date().addingTimeInterval(60))
            return UserCaller(user: user, credential: .session(session), ip: "127.0.0.1", userAgent: nil)
        }
        let token = APIToken(
            id: UUID(), kind: .personal, userID: id, name: "pat", scopes: scopes, createdAt: Date(), lastUsedAt: nil,
            expiresAt: nil, revokedAt: nil)
        return UserCaller(user: user, credential: .personalToken(token), ip: "127.0.0.1", userAgent: nil)
    }
}

@Suite("Credential access decides every read and gateway use")
struct CredentialAccessTests {
    @Test("the decision for every use, token scope and state of the integration")
    func decisionMatrix() {
        let workspace = UUID()
        let integration = Services().workspaces.add(in: workspace)
        var disabled = integration
        disabled.enabled = false
        var notForwarded = integration
        notForwarded.type = .aws
        let cases: [(CredentialAccess.Use, UUID?, Integration, Bool, String?)] = [
            (.read, nil, integration, false, nil),
            (.read, workspace, integration, false, nil),
            (.read, UUID(), integration, false, "outside_workspace"),
            (.read, nil, integration, true, "owner_disabled"),
            (.read, nil, disabled, false, "integration_disabled"),
            (.read, nil, notForwarded, false, nil),
            (.gateway, nil, integration, false, nil),
            (.gateway, UUID(), integration, false, "outside_workspace"),
            (.gateway, nil, notForwarded, false, "not_forwarded"),
            (.gateway, nil, integration, true, "owner_disabled"),
            (.gateway, nil, disabled, false, "integration_disabled"),
        ]
        for (use, scope, subject, ownerDisabled, expected) in cases {
            let denial = CredentialAccess.decide(
                use, scope: scope, CredentialTarget(integration: subject, ownerDisabled: ownerDisabled))
            #expect(
                denial?.reason == expected, "\(use) scope \(String(describing: scope)) → \(expected ?? "allowed")")
        }
        // Outside its workspace a token learns nothing: not found, recorded in its own workspace.
        let scope = UUID()
        let outside = CredentialAccess.decide(
            .read, scope: scope, CredentialTarget(integration: integration, ownerDisabled: false))
        #expect(outside?.recordedIn == scope)
        if case .notFound? = outside?.error {} else { Issue.record("outside the workspace must read as not found") }
    }

    @Test("a refused read is audited with its reason; an anonymous one is not an actor worth a record")
    func refusalsAreAudited() async throws {
        let services = Services()
        let workspace = UUID()
        let integration = services.workspaces.add(in: workspace)
        let access = services.credentials
        let user = Services.caller()
        await #expect(throws: KeyhavenError.self) {
            _ = try await access.read(id: integration.id, by: nil, ip: nil, userAgent: nil)
        }
        #expect(services.audit.denials.isEmpty)
        await #expect(throws: KeyhavenError.self) {
            _ = try await access.read(
                id: integration.id, by: .user(user.user, via: user.credential), ip: nil, userAgent: nil)
        }
        let (_, unscoped) = services.tokens.serviceToken([.gatewayUse])
        await #expect(throws: KeyhavenError.self) {
            _ = try await access.read(id: integration.id, by: .service(unscoped), ip: nil, userAgent: nil)
        }
        let (_, elsewhere) = services.tokens.serviceToken([.credentialsRead], workspace: UUID())
        await #expect(throws: KeyhavenError.self) {
            _ = try await access.read(id: integration.id, by: .service(elsewhere), ip: nil, userAgent: nil)
        }
        let (_, reader) = services.tokens.serviceToken([.credentialsRead], workspace: workspace)
        let (read, credentials) = try await access.read(
            id: integration.id, by: .service(reader), ip: nil, userAgent: nil)
        #expect(read.id == integration.id && credentials.description == "<redacted>")
        let denials = services.audit.denials
        #expect(denials.map(\.reason) == ["not_a_service_token", "missing_scope", "outside_workspace"])
        #expect(denials.map(\.ownerID) == [user.user.id, nil, elsewhere.workspaceID])
    }

    @Test("the gateway takes only service tokens with gateway:use")
    func gatewayToken() async throws {
        let services = Services()
        let access = services.credentials
        let (secret, token) = services.tokens.serviceToken([.gatewayUse])
        #expect(try await access.gatewayToken(secret).id == token.id)
        let (reader, _) = services.tokens.serviceToken([.credentialsRead])
        for presented in [nil, "", "sk-not-ours", "kh_svc_unknown", reader] {
            await #expect(throws: KeyhavenError.self) { _ = try await access.gatewayToken(presented) }
        }
    }
}

@Suite("Integration service")
struct IntegrationServiceTests {
    @Test("every action that calls the provider is counted against the caller's checks; the others are not")
    func checksCounted() async throws {
        let services = Services()
        let caller = Services.caller()
        let service = services.integrations()
        let integration = services.workspaces.add(in: caller.user.id, enabled: false)
        let target = try await service.permit(integration.id, .editIntegrations, by: caller)
        var rename = IntegrationChanges()
        rename.name = "renamed"
        _ = try await service.update(target, rename)
        #expect(services.limiter.count("checks:") == 0)
        _ = try await service.update(target, IntegrationChanges(enabled: true))
        _ = try await service.update(target, IntegrationChanges(credentials: .apiKey("sk-new")))
        _ = try await service.test(target)
        await #expect(throws: KeyhavenError.self) { _ = try await service.rotate(target) }
        _ = try await service.create(by: caller) {
            IntegrationDraft(workspace: nil, name: "new", type: .openai, credentials: .apiKey("sk-x"), config: [:])
        }
        #expect(services.limiter.count("checks:") == 5)
        let exhausted = services.integrations(checks: 5)
        await #expect(throws: KeyhavenError.rateLimited(retryAfterSeconds: 1)) { _ = try await exhausted.test(target) }
    }

    @Test("a role permitted one action cannot take another with the same permission")
    func permittedIsPerRole() async throws {
        let services = Services()
        let organization = UUID()
        let viewer = Services.caller()
        let member = Services.caller()
        services.workspaces.grant(.viewer, to: viewer.user.id, in: organization)
        services.workspaces.grant(.member, to: member.user.id, in: organization)
        let integration = services.workspaces.add(in: organization)
        let service = services.integrations()
        let seen = try await service.permit(integration.id, .view, by: viewer)
        await #expect(throws: KeyhavenError.self) {
            _ = try await service.update(seen, IntegrationChanges(enabled: false))
        }
        await #expect(throws: KeyhavenError.self) { try await service.delete(seen) }
        // A member edits, but may not move it out: elsewhere they could mint a token and read it.
        let edited = try await service.permit(integration.id, .editIntegrations, by: member)
        await #expect(throws: KeyhavenError.self) { _ = try await service.move(edited, to: member.user.id) }
        await #expect(throws: KeyhavenError.self) {
            _ = try await service.permit(integration.id, .moveIntegrationsOut, by: member)
        }
        // A stranger does not learn it exists.
        await #expect(throws: KeyhavenError.notFound) {
            _ = try await service.permit(integration.id, .view, by: Services.caller())
        }
        #expect(try await services.workspaces.find(id: integration.id).enabled)
    }

    @Test("a token without the scope is refused before its request's id or body is read")
    func scopeBeforeInput() async throws {
        let services = Services()
        let readOnly = Services.caller(scopes: [.integrationsRead])
        let service = services.integrations()
        let read = Mutex(0)
        func id() throws -> UUID {
            read.withLock { $0 += 1 }
            throw KeyhavenError.notFound
        }
        await #expect(throws: KeyhavenError.forbidden("This token lacks the integrations:write scope.")) {
            _ = try await service.permit(try id(), .editIntegrations, by: readOnly)
        }
        await #expect(throws: KeyhavenError.forbidden("This token lacks the integrations:write scope.")) {
            _ = try await service.create(by: readOnly) {
                read.withLock { $0 += 1 }
                throw KeyhavenError.validationFailed(["name": "is required"])
            }
        }
        await #expect(throws: KeyhavenError.forbidden("This token lacks the integrations:write scope.")) {
            try await services.organizations.remove(try id(), from: try id(), by: readOnly)
        }
        #expect(read.withLock { $0 } == 0)
    }

    @Test("a list filtered by rotation due reads on from its cursor until it has a page")
    func rotationDueList() async throws {
        let services = Services()
        let caller = Services.caller()
        for _ in 0..<5 { services.workspaces.add(in: caller.user.id) }
        let service = services.integrations()
        let (due, next, _) = try await service.list(
            in: caller.user.id, by: caller, limit: 2, after: nil, rotationDue: true)
        #expect(due.isEmpty && next == nil)
        let (notDue, more, _) = try await service.list(
            in: caller.user.id, by: caller, limit: 2, after: nil, rotationDue: false)
        #expect(notDue.count == 2 && more == notDue.last?.id)
    }
}

@Suite("Organization service")
struct OrganizationServiceTests {
    @Test("any member may leave, but only a manager of members removes someone else")
    func leaving() async throws {
        let services = Services()
        let organization = UUID()
        let viewer = Services.caller()
        let other = Services.caller()
        services.workspaces.grant(.viewer, to: viewer.user.id, in: organization)
        services.workspaces.grant(.viewer, to: other.user.id, in: organization)
        let service = services.organizations
        await #expect(throws: KeyhavenError.self) {
            try await service.remove(other.user.id, from: organization, by: viewer)
        }
        try await service.remove(viewer.user.id, from: organization, by: viewer)
        #expect(try await services.workspaces.role(of: viewer.user.id, in: organization) == nil)
        #expect(try await services.workspaces.role(of: other.user.id, in: organization) == .viewer)
    }
}
