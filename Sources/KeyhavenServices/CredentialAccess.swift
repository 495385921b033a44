import Foundation
import KeyhavenCore
import KeyhavenGateway

/// The one place that decides whether a caller may have an integration's credentials, read (the backend-only
/// credentials route) or injected into a provider request (the gateway), and that audits every refused read.
///
/// A decision has two halves. Who is calling (a service token, with the scope the use needs) is decided here from
/// the caller's identity; what the integration allows (the token's workspace, the owner's and the integration's
/// disabled states, the provider) is decided by ``decide(_:scope:_:)``, which the store runs on the integration's row
/// inside the transaction that reads the secret, so no change between decision and read can slip through.
public struct CredentialAccess: Sendable {
    /// What the credentials are wanted for.
    public enum Use: Sendable {
        /// Returned to the application backend (`credentials:read`).
        case read
        /// Injected into a provider request by the gateway (`gateway:use`); never returned.
        case gateway
    }

    let integrations: any IntegrationStore
    let tokens: any TokenStore
    let audit: any AuditLog
    let budgets: Budgets
    let routes: any RouteStore

    /// Creates the access check over the stores that hold integrations, tokens, fallback routes and the audit trail,
    /// and the budgets a gateway request is admitted by.
    public init(
        integrations: any IntegrationStore, tokens: any TokenStore, audit: any AuditLog, budgets: Budgets,
        routes: any RouteStore
    ) {
        self.integrations = integrations
        self.tokens = tokens
        self.audit = audit
        self.budgets = budgets
        self.routes = routes
    }

    /// Reads integration `id`'s credentials for `identity`; the read, allowed or refused, is audited before anything
    /// is returned (an anonymous caller is not an actor worth a record).
    ///
    /// - Throws: `KeyhavenError.unauthenticated` without an identity, `.forbidden` for a user or a token without
    ///   `credentials:read`, or a disabled owner, `.notFound` (also outside the token's workspace),
    ///   `.integrationDisabled`, `.decryptionFailed`, `.unavailable`.
    public func read(
        id: UUID, by identity: Identity?, ip: String?, userAgent: String?
    ) async throws -> (Integration, Credentials) {
        let token: APIToken
        switch identity {
        case nil:
            throw KeyhavenError.unauthenticated
        case .user(let user, _):
            try await refuse(
                id, actor: AuditActor(kind: .user, id: user.id.lowercasedText, ip: ip, userAgent: userAgent),
                recordedIn: user.id, reason: "not_a_service_token")
            throw KeyhavenError.forbidden("Only service tokens can read credentials.")
        case .service(let service):
            token = service
        }
        let actor = AuditActor(kind: .service, id: token.id.lowercasedText, ip: ip, userAgent: userAgent)
        guard token.scopes.contains(.credentialsRead) else {
            try await refuse(id, actor: actor, recordedIn: nil, reason: "missing_scope")
            throw KeyhavenError.forbidden("This token lacks the credentials:read scope.")
        }
        let scope = token.workspaceID
        return try await integrations.readCredentials(id: id, actor: actor) { Self.decide(.read, scope: scope, $0) }
    }

    /// The service token presented to the gateway (as a bearer token or in the header a provider's SDK sends its
    /// key in), if it may use the gateway.
    ///
    /// - Throws: `KeyhavenError.unauthenticated` without a valid service token, `.forbidden` without `gateway:use`.
    public func gatewayToken(_ presented: String?) async throws -> APIToken {
        guard let presented, presented.hasPrefix("kh_svc_"),
            let (token, _) = try await tokens.authenticate(token: presented), token.kind == .service
        else { throw KeyhavenError.unauthenticated }
        guard token.scopes.contains(.gatewayUse) else {
            throw KeyhavenError.forbidden("This token lacks the gateway:use scope.")
        }
        return token
    }

    /// Integration `id`, its credentials and what its limits ask of metering, if `token` may use it through the
    /// gateway and its budgets and rate limits allow a request now. Refusals are not audited: the gateway's requests
    /// are recorded as usage.
    ///
    /// - Throws: `notFound` (also outside the token's workspace), `badRequest` for a provider the gateway does not
    ///   forward to, `forbidden` (a disabled owner), `integrationDisabled`, `budgetExceeded`, `rateLimited`.
    public func gatewayTarget(
        _ id: UUID, token: APIToken
    ) async throws -> (Integration, Credentials, Gateway.Metering) {
        let (integration, credentials) = try await integrations.gatewayTarget(id: id) {
            Self.decide(.gateway, scope: token.workspaceID, $0)
        }
        return (integration, credentials, try await budgets.admit(integration))
    }

    /// Fallback route `name` of the token's workspace; a token for every workspace names the route's in
    /// `workspace` (the `Keyhaven-Workspace` header). Each integration of the route is admitted on its own by
    /// ``gatewayTarget(_:token:)``.
    ///
    /// - Throws: `badRequest` when a token for every workspace names none, `notFound`.
    public func gatewayRoute(_ name: String, token: APIToken, workspace named: UUID?) async throws -> GatewayRoute {
        guard let workspace = token.workspaceID ?? named else {
            throw KeyhavenError.badRequest(
                "A service token for every workspace names the route's in a Keyhaven-Workspace header.")
        }
        return try await routes.route(name: name, ownerID: workspace)
    }

    /// Whether a service token limited to workspace `scope` (nil: every workspace) may have `target`'s credentials
    /// for `use`; nil when it may, else the denial.
    public static func decide(_ use: Use, scope: UUID?, _ target: CredentialTarget) -> CredentialDenial? {
        let integration = target.integration
        let action: Policy.Action = use == .read ? .readCredentials : .useIntegration
        guard Policy.decide(.service(workspace: scope), action, in: integration.ownerID) == .allowed else {
            // Recorded in the token's workspace, not the integration's: its owners learn nothing of it.
            return CredentialDenial(reason: "outside_workspace", error: .notFound, recordedIn: scope)
        }
        if use == .gateway, !Gateway.forwards(integration.type) {
            return CredentialDenial(
                reason: "not_forwarded",
                error: .badRequest("The gateway forwards only to providers with gateway rules in GET /api/catalog."),
                recordedIn: integration.ownerID)
        }
        if target.ownerDisabled {
            return CredentialDenial(
                reason: "owner_disabled", error: .forbidden("The integration's owner is disabled."),
                recordedIn: integration.ownerID)
        }
        guard integration.enabled else {
            return CredentialDenial(
                reason: "integration_disabled", error: .integrationDisabled, recordedIn: integration.ownerID)
        }
        return nil
    }

    private func refuse(_ id: UUID, actor: AuditActor, recordedIn owner: UUID?, reason: String) async throws {
        try await audit.append(
            AuditEntry(
                actor: actor, action: .credentialsRead, outcome: .denied, ownerID: owner, integrationID: id,
                detail: ["reason": .string(reason)]))
    }
}
