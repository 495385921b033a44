import Foundation
import KeyhavenCore

/// A new integration that passed every rule, as the JSON API and the form both make it.
public struct IntegrationDraft: Sendable {
    /// The workspace to create it in; nil for the caller's personal one.
    public var workspace: UUID?
    public var name: String
    public var type: IntegrationType
    public var credentials: Credentials
    public var config: [String: JSONValue]
    public var rotation: RotationPolicy

    /// Creates a draft.
    public init(
        workspace: UUID?, name: String, type: IntegrationType, credentials: Credentials, config: [String: JSONValue],
        rotation: RotationPolicy = .off
    ) {
        self.workspace = workspace
        self.name = name
        self.type = type
        self.credentials = credentials
        self.config = config
        self.rotation = rotation
    }
}

/// What users do with integrations (SPEC §6, §7, §12, §15), for the JSON API and the web pages alike: every action
/// checks the caller's token scope, asks ``WorkspaceAccess`` for their role, counts the provider checks it starts
/// against ``CheckRateLimit``, and then calls the store, which audits it.
///
/// A change is made in two steps: ``permit(_:_:by:)`` decides whether the caller may take an action on the
/// integration and returns a ``Permitted`` value, which only this service can make; the action then takes that
/// value. A handler can look at the integration between the two (to validate a body against its type) and cannot
/// act on one it was not permitted.
public struct IntegrationService: Sendable {
    let integrations: any IntegrationStore
    let secrets: any SecretStore
    let audit: any AuditLog
    let rotations: any RotationStore
    let tester: any IntegrationTester
    let limiter: any RateLimiter
    let checks: CheckRateLimit
    /// The access check of every action (public for the pages, which show controls by role).
    public let access: WorkspaceAccess

    /// An integration the caller was permitted to take `action` on, with their role in its workspace.
    public struct Permitted: Sendable {
        public let integration: Integration
        public let role: WorkspaceRole
        public let action: Policy.Action
        public let caller: UserCaller

        fileprivate init(integration: Integration, role: WorkspaceRole, action: Policy.Action, caller: UserCaller) {
            self.integration = integration
            self.role = role
            self.action = action
            self.caller = caller
        }
    }

    /// What an integration's page shows of its past: credential versions, recent events and rotations.
    public struct History: Sendable {
        public let versions: [SecretVersionInfo]
        public let events: [AuditEvent]
        public let rotations: [RotationRecord]
    }

    /// Creates the service over the stores, the tester of connectivity checks and the limit on provider checks.
    public init(
        integrations: any IntegrationStore, secrets: any SecretStore, audit: any AuditLog, rotations: any RotationStore,
        tester: any IntegrationTester, limiter: any RateLimiter, checks: CheckRateLimit, access: WorkspaceAccess
    ) {
        self.integrations = integrations
        self.secrets = secrets
        self.audit = audit
        self.rotations = rotations
        self.tester = tester
        self.limiter = limiter
        self.checks = checks
        self.access = access
    }

    /// Integration `id`, if `caller` may take `action` on it: `integrations:read` for viewing, `integrations:write`
    /// for anything else, and a role that allows it. `id` is read after the scope check, so a token without the
    /// scope is told so whatever the id.
    ///
    /// - Throws: `KeyhavenError.forbidden` (scope or role), `.notFound` (also in a workspace the caller cannot see).
    public func permit(
        _ id: @autoclosure () throws -> UUID, _ action: Policy.Action, by caller: UserCaller
    ) async throws -> Permitted {
        try caller.require(action == .view ? .integrationsRead : .integrationsWrite)
        let (integration, role) = try await access.integrationAndRole(try id(), action, for: caller.user)
        return Permitted(integration: integration, role: role, action: action, caller: caller)
    }

    /// The caller's role in `workspace`, if it allows `action` (the scope as for ``permit(_:_:by:)``).
    ///
    /// - Throws: `KeyhavenError.forbidden` (scope or role), `.notFound` if the caller is not a member.
    @discardableResult
    public func workspace(_ workspace: UUID, _ action: Policy.Action, by caller: UserCaller) async throws
        -> WorkspaceRole
    {
        try caller.require(action == .view ? .integrationsRead : .integrationsWrite)
        return try await access.require(action, in: workspace, for: caller.user)
    }

    /// One page of a workspace's integrations, newest first, after `cursor`; with `rotationDue`, only those whose
    /// rotation is (or is not) due, read until `limit` match or 5,000 were looked at. `next` is where the following
    /// page starts, nil at the end; `role` is the caller's in the workspace.
    ///
    /// - Throws: as ``workspace(_:_:by:)``, `.unavailable`.
    public func list(
        in workspace: UUID, by caller: UserCaller, limit: Int, after cursor: UUID?, rotationDue: Bool? = nil
    ) async throws -> (integrations: [Integration], next: UUID?, role: WorkspaceRole) {
        let role = try await self.workspace(workspace, .view, by: caller)
        guard let due = rotationDue else {
            let page = try await integrations.list(ownerID: workspace, limit: limit + 1, after: cursor)
            let shown = Array(page.prefix(limit))
            return (shown, page.count > limit ? shown.last?.id : nil, role)
        }
        // The cursor is the last row looked at, so the next page goes on from there.
        let now = Date()
        var shown: [Integration] = []
        var position = cursor
        var scanned = 0
        scan: while shown.count < limit && scanned < 5_000 {
            let page = try await integrations.list(ownerID: workspace, limit: 200, after: position)
            for integration in page {
                position = integration.id
                scanned += 1
                if integration.rotationDue(now: now) == due { shown.append(integration) }
                if shown.count == limit { break scan }
            }
            if page.count < 200 { return (shown, nil, role) }
        }
        return (shown, position, role)
    }

    /// Creates an integration in status `verifying`. `draft` is called after the scope check and before the
    /// workspace's, so a caller without the scope learns nothing of their input's problems.
    ///
    /// - Throws: `forbidden`, what `draft` throws, `notFound` (a workspace the caller cannot see), `rateLimited`,
    ///   `conflict` (the name is taken).
    public func create(by caller: UserCaller, _ draft: () async throws -> IntegrationDraft) async throws -> Integration
    {
        try caller.require(.integrationsWrite)
        let new = try await draft()
        let workspace = new.workspace ?? caller.user.id
        try await access.require(.editIntegrations, in: workspace, for: caller.user)
        let check = try await checks.counting(caller.user.id, on: limiter)
        return try await integrations.create(
            ownerID: workspace, name: new.name, type: new.type, config: new.config, credentials: new.credentials,
            rotation: new.rotation, counting: check, actor: caller.actor)
    }

    /// Applies `changes`; new credentials or re-enabling start a provider check and are counted.
    ///
    /// - Throws: `forbidden` unless permitted to edit, `rateLimited`, `notFound`, `conflict`.
    public func update(_ target: Permitted, _ changes: IntegrationChanges) async throws -> Integration {
        let current = try target.require(.editIntegrations)
        if changes.credentials != nil || (changes.enabled == true && !current.enabled) {
            try await checks.count(target.caller.user.id, on: limiter)
        }
        return try await integrations.update(
            id: current.id, ownerID: current.ownerID, changes: changes, actor: target.caller.actor)
    }

    /// Sets the rotation policy.
    ///
    /// - Throws: `forbidden` unless permitted to edit, `validationFailed`, `notFound`.
    public func setRotationPolicy(_ target: Permitted, _ policy: RotationPolicy) async throws -> Integration {
        let current = try target.require(.editIntegrations)
        return try await rotations.setPolicy(
            policy, id: current.id, ownerID: current.ownerID, actor: target.caller.actor)
    }

    /// Starts a rotation now; it calls the provider, so it is counted as a check.
    ///
    /// - Throws: `forbidden` unless permitted to edit, `rateLimited`, `notFound`, `conflict` (see the store).
    public func rotate(_ target: Permitted) async throws -> RotationRecord {
        let current = try target.require(.editIntegrations)
        try await checks.count(target.caller.user.id, on: limiter)
        return try await rotations.request(
            id: current.id, ownerID: current.ownerID, actor: target.caller.actor, now: Date())
    }

    /// Checks the stored credentials with the provider now; it changes the status, so it takes the right to edit.
    ///
    /// - Throws: `forbidden` unless permitted to edit, `rateLimited`, `notFound`, `unavailable`.
    public func test(_ target: Permitted) async throws -> VerificationRecord {
        let current = try target.require(.editIntegrations)
        try await checks.count(target.caller.user.id, on: limiter)
        return try await tester.testNow(id: current.id, ownerID: current.ownerID, actor: target.caller.actor)
    }

    /// Moves the integration into `workspace`, where the caller must be allowed to add integrations. Permission to
    /// move it out (``Policy/Action/moveIntegrationsOut``) is asked of its current workspace.
    ///
    /// - Throws: `forbidden`, `notFound` (also a target the caller cannot see), `conflict`.
    public func move(_ target: Permitted, to workspace: UUID) async throws -> Integration {
        let current = try target.require(.moveIntegrationsOut)
        try await access.require(.editIntegrations, in: workspace, for: target.caller.user)
        return try await integrations.move(
            id: current.id, from: current.ownerID, to: workspace, actor: target.caller.actor)
    }

    /// Deletes the integration and every version of its credentials.
    ///
    /// - Throws: `forbidden` unless permitted to edit, `notFound`.
    public func delete(_ target: Permitted) async throws {
        let current = try target.require(.editIntegrations)
        try await integrations.delete(id: current.id, ownerID: current.ownerID, actor: target.caller.actor)
    }

    /// The integration's credential versions (never their values), its latest events and rotations.
    ///
    /// - Throws: `unavailable`.
    public func history(_ target: Permitted, events limit: Int = 20) async throws -> History {
        let integration = target.integration
        let owner = SecretOwner(integrationID: integration.id, ownerID: integration.ownerID)
        return History(
            versions: try await secrets.versions(of: owner),
            events: try await audit.events(
                ownerID: integration.ownerID, integrationID: integration.id, limit: limit, before: nil),
            rotations: try await rotations.rotations(
                integrationID: integration.id, ownerID: integration.ownerID, limit: 10))
    }

    /// The integration as stored now (after a test changed its status).
    ///
    /// - Throws: `notFound`, `unavailable`.
    public func reload(_ target: Permitted) async throws -> Integration {
        try await integrations.get(id: target.integration.id, ownerID: target.integration.ownerID)
    }
}

extension IntegrationService.Permitted {
    /// The integration, if the role it was permitted with also allows `action`.
    ///
    /// - Throws: `KeyhavenError.forbidden`.
    func require(_ action: Policy.Action) throws -> Integration {
        try Policy.require(.user(role), action, in: integration.ownerID)
        return integration
    }
}
