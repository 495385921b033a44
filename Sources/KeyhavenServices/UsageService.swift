import Foundation
import KeyhavenCore
import KeyhavenGateway

/// One call a backend reports it made itself, as validated from the request.
public struct UsageReport: Sendable {
    public var model: String
    public var tokens: TokenUsage
    public var requests: Int64
    public var occurredAt: Date
    public var idempotencyKey: String

    /// Creates a report.
    public init(model: String, tokens: TokenUsage, requests: Int64, occurredAt: Date, idempotencyKey: String) {
        self.model = model
        self.tokens = tokens
        self.requests = requests
        self.occurredAt = occurredAt
        self.idempotencyKey = idempotencyKey
    }
}

/// Usage, cost and budgets (SPEC §13): reports from backends, totals for users, budgets and rate limits, negotiated
/// prices and fallback routes, for the JSON API and the pages alike. Every method checks the caller (scope, role)
/// before it reads a body (`input`) or a store.
public struct UsageService: Sendable {
    let usage: any UsageStore
    let integrations: any IntegrationStore
    let limits: any LimitStore
    let budgets: Budgets
    let prices: Prices
    let priceStore: any PriceStore
    let routes: any RouteStore
    let limiter: any RateLimiter
    let reports: CheckRateLimit
    let access: WorkspaceAccess

    /// Creates the service; `reports` bounds the usage reports of one service token.
    public init(
        usage: any UsageStore, integrations: any IntegrationStore, limits: any LimitStore, budgets: Budgets,
        prices: Prices, priceStore: any PriceStore, routes: any RouteStore, limiter: any RateLimiter,
        reports: CheckRateLimit, access: WorkspaceAccess
    ) {
        self.usage = usage
        self.integrations = integrations
        self.limits = limits
        self.budgets = budgets
        self.prices = prices
        self.priceStore = priceStore
        self.routes = routes
        self.limiter = limiter
        self.reports = reports
        self.access = access
    }

    // MARK: Reports

    /// Records a call a service token with `usage:report` made itself on integration `id`; the same idempotency key
    /// twice records it once (`created` false the second time, with the stored event). A report adds to the spending
    /// budgets are checked against, so it is rate-limited per token and audited with the event it recorded.
    ///
    /// - Throws: `unauthenticated`, `forbidden` (not a service token, or without the scope), `rateLimited`,
    ///   `notFound` (also outside the token's workspace), what `report` throws, `validationFailed` for a report
    ///   costing more than one report may hold.
    public func report(
        on id: @autoclosure () throws -> UUID, by identity: Identity?, ip: String?, userAgent: String?,
        _ report: () async throws -> UsageReport
    ) async throws -> (UsageEvent, created: Bool) {
        guard case .service(let token)? = identity else {
            if identity == nil { throw KeyhavenError.unauthenticated }
            throw KeyhavenError.forbidden("Only service tokens can report usage.")
        }
        guard token.scopes.contains(.usageReport) else {
            throw KeyhavenError.forbidden("This token lacks the usage:report scope.")
        }
        try await reports.count(token: token.id, on: limiter)
        let integration = try await integrations.find(id: try id())
        try Policy.require(.service(workspace: token.workspaceID), .useIntegration, in: integration.ownerID)
        let valid = try await report()
        let cost = await prices.cost(
            integration.type, model: valid.model, usage: valid.tokens, ownerID: integration.ownerID)
        if let cost, cost > UsageBounds.eventCostMicros {
            let reason = "at the model's price, the report's tokens cost more than the $1000000 one report may hold"
            throw KeyhavenError.validationFailed(["input_tokens": reason, "output_tokens": reason])
        }
        let event = UsageEvent(
            ownerID: integration.ownerID, integrationID: integration.id, type: integration.type, model: valid.model,
            source: .reported, requests: valid.requests, tokens: valid.tokens, costMicros: cost, tokenID: token.id,
            idempotencyKey: valid.idempotencyKey, occurredAt: valid.occurredAt)
        let audit = AuditEntry(
            actor: AuditActor(kind: .service, id: token.id.lowercasedText, ip: ip, userAgent: userAgent),
            action: .usageReport, ownerID: integration.ownerID, integrationID: integration.id,
            detail: [
                "event_id": .string(event.id.lowercasedText), "model": .string(valid.model),
                "requests": .number(Double(valid.requests)), "input_tokens": .number(Double(valid.tokens.inputTokens)),
                "output_tokens": .number(Double(valid.tokens.outputTokens)),
                "cost_micros": event.costMicros.map { .number(Double($0)) } ?? .null,
            ])
        return try await usage.report(event, audit: audit)
    }

    // MARK: Totals

    /// What a summary covers: a workspace, or one integration (whose workspace is then the one that counts).
    public enum Scope: Sendable {
        /// A workspace's integrations.
        case workspace(UUID)
        /// One integration; `workspace`, if the request named one, must be its workspace.
        case integration(UUID, workspace: UUID?)
    }

    /// Totals per `grouping` between two days (`yyyy-MM-dd`, inclusive).
    ///
    /// - Throws: `forbidden`, `notFound`, `unavailable`.
    public func summary(
        _ scope: Scope, by caller: UserCaller, from: String, to: String, grouping: UsageGrouping
    ) async throws -> (query: UsageQuery, rows: [UsageTotals]) {
        try caller.require(.integrationsRead)
        let workspace: UUID
        var integrationID: UUID?
        switch scope {
        case .workspace(let id):
            try await access.require(.view, in: id, for: caller.user)
            workspace = id
        case .integration(let id, let named):
            let integration = try await access.integration(id, .view, for: caller.user)
            if let named, integration.ownerID != named { throw KeyhavenError.notFound }
            workspace = integration.ownerID
            integrationID = id
        }
        let query = UsageQuery(ownerID: workspace, integrationID: integrationID, from: from, to: to, grouping: grouping)
        return (query, try await usage.summary(query))
    }

    /// A period's usage of a workspace or an integration as its pages show it: totals per day and per model, and
    /// this month's standing against the budget.
    public struct Overview: Sendable {
        public let daily: [UsageTotals]
        public let models: [UsageTotals]
        public let standing: Budgets.Standing
    }

    /// The overview of `scope` between two days.
    ///
    /// - Throws: `forbidden`, `notFound`, `unavailable`.
    public func overview(_ scope: Scope, by caller: UserCaller, from: String, to: String) async throws -> Overview {
        let (query, daily) = try await summary(scope, by: caller, from: from, to: to, grouping: .day)
        var models = query
        models.grouping = .model
        return Overview(
            daily: daily, models: try await usage.summary(models),
            standing: try await budgets.standing(subject: query.integrationID ?? query.ownerID, ownerID: query.ownerID))
    }

    /// Which of `integrations` (that the caller was shown) have spent at least the warning share of their monthly
    /// budget: one query for the limits, then one per integration that has a budget.
    ///
    /// - Throws: `unavailable`.
    public func budgetWarnings(among integrations: [Integration]) async throws -> Set<UUID> {
        let limits = try await limits.limits(for: integrations.map(\.id))
        var warned: Set<UUID> = []
        for integration in integrations where limits[integration.id]?.monthlyBudgetMicros != nil {
            let standing = try await budgets.standing(subject: integration.id, ownerID: integration.ownerID)
            if standing.warning { warned.insert(integration.id) }
        }
        return warned
    }

    // MARK: Budgets and rate limits

    /// Whose limits: one integration's, or a workspace's.
    public enum Subject: Sendable {
        case integration(UUID)
        case workspace(UUID)
    }

    /// The limits of `subject` and this month's spending against them; anyone who sees the workspace reads them.
    ///
    /// - Throws: `forbidden`, `notFound`, `unavailable`.
    public func standing(of subject: Subject, by caller: UserCaller) async throws -> Budgets.Standing {
        try caller.require(.integrationsRead)
        let (id, owner) = try await resolve(subject, .view, by: caller)
        return try await budgets.standing(subject: id, ownerID: owner)
    }

    /// Replaces the limits of `subject` (owners and admins) with what `limits` makes of the current ones; the
    /// gateway sees them at its next request.
    ///
    /// - Throws: `forbidden`, `notFound`, what `limits` throws, `unavailable`.
    public func setLimits(
        of subject: Subject, by caller: UserCaller, _ limits: (_ current: UsageLimits) async throws -> UsageLimits
    ) async throws -> Budgets.Standing {
        try caller.require(.integrationsWrite)
        let (id, owner) = try await resolve(subject, .manageBudgets, by: caller)
        let current = try await self.limits.limits(for: [id])[id] ?? UsageLimits()
        try await self.limits.setLimits(try await limits(current), subject: id, ownerID: owner, actor: caller.actor)
        budgets.forget(id)
        return try await budgets.standing(subject: id, ownerID: owner)
    }

    /// The subject's id and workspace, if the caller may take `action` there.
    private func resolve(
        _ subject: Subject, _ action: Policy.Action, by caller: UserCaller
    ) async throws -> (id: UUID, owner: UUID) {
        switch subject {
        case .integration(let id):
            let integration = try await access.integration(id, action, for: caller.user)
            return (integration.id, integration.ownerID)
        case .workspace(let id):
            try await access.require(action, in: id, for: caller.user)
            return (id, id)
        }
    }

    // MARK: Negotiated prices

    /// A workspace's negotiated prices; anyone who sees it reads them.
    ///
    /// - Throws: `forbidden`, `notFound`, `unavailable`.
    public func prices(in workspace: UUID, by caller: UserCaller) async throws -> [PriceOverride] {
        try caller.require(.integrationsRead)
        try await access.require(.view, in: workspace, for: caller.user)
        return try await priceStore.overrides(ownerID: workspace)
    }

    /// Replaces a workspace's negotiated prices (owners and admins); its costs use them from then on.
    ///
    /// - Throws: `forbidden`, `notFound`, what `overrides` throws, `conflict` (a model listed twice).
    public func replacePrices(
        in workspace: UUID, by caller: UserCaller, _ overrides: () async throws -> [PriceOverride]
    ) async throws -> [PriceOverride] {
        try caller.require(.integrationsWrite)
        try await access.require(.manageBudgets, in: workspace, for: caller.user)
        let list = try await overrides()
        var seen: Set<String> = []
        for price in list where !seen.insert(price.model).inserted {
            throw KeyhavenError.conflict("\(price.model) is listed twice.")
        }
        try await priceStore.setOverrides(list, ownerID: workspace, actor: caller.actor)
        prices.forget(workspace)
        return try await priceStore.overrides(ownerID: workspace)
    }

    // MARK: Fallback routes

    /// A workspace's fallback routes; anyone who sees it reads them.
    ///
    /// - Throws: `forbidden`, `notFound`, `unavailable`.
    public func routes(in workspace: UUID, by caller: UserCaller) async throws -> [GatewayRoute] {
        try caller.require(.integrationsRead)
        try await access.require(.view, in: workspace, for: caller.user)
        return try await routes.routes(ownerID: workspace)
    }

    /// Creates or replaces route `name` (members and up) over integrations of the same workspace that the gateway
    /// forwards to.
    ///
    /// - Throws: `forbidden`, `notFound` (also an integration of another workspace), what `integrationIDs` throws,
    ///   `conflict` (an integration the gateway does not forward to).
    public func putRoute(
        _ name: String, in workspace: UUID, by caller: UserCaller, _ integrationIDs: () async throws -> [UUID]
    ) async throws -> GatewayRoute {
        try caller.require(.integrationsWrite)
        try await access.require(.editIntegrations, in: workspace, for: caller.user)
        let ids = try await integrationIDs()
        for id in ids {
            // Another workspace's integration is not found, as everywhere.
            let integration = try await integrations.find(id: id)
            guard integration.ownerID == workspace else { throw KeyhavenError.notFound }
            guard Gateway.forwards(integration.type) else {
                throw KeyhavenError.conflict("A route lists only integrations the gateway forwards to.")
            }
        }
        let route = GatewayRoute(name: name, ownerID: workspace, integrationIDs: ids, updatedAt: Date())
        try await routes.put(route, actor: caller.actor)
        return try await routes.route(name: name, ownerID: workspace)
    }

    /// Deletes route `name` (members and up).
    ///
    /// - Throws: `forbidden`, `notFound`.
    public func deleteRoute(_ name: String, in workspace: UUID, by caller: UserCaller) async throws {
        try caller.require(.integrationsWrite)
        try await access.require(.editIntegrations, in: workspace, for: caller.user)
        try await routes.delete(name: name, ownerID: workspace, actor: caller.actor)
    }
}
