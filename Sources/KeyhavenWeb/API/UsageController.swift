import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices
import KeyhavenGateway

/// Usage reports from backends that call providers themselves, and usage analytics (SPEC §13).
public struct UsageController: Sendable {
    let usage: any UsageStore
    let integrations: any IntegrationStore
    let prices: Prices
    let access: WorkspaceAccess
    let limiter: any RateLimiter
    let reports: CheckRateLimit

    /// Creates the controller; `reports` bounds the usage reports of one service token.
    public init(
        usage: any UsageStore, integrations: any IntegrationStore, prices: Prices, access: WorkspaceAccess,
        limiter: any RateLimiter, reports: CheckRateLimit
    ) {
        self.usage = usage
        self.integrations = integrations
        self.prices = prices
        self.access = access
        self.limiter = limiter
        self.reports = reports
    }

    /// Adds `POST /api/integrations/{id}/usage` to `api` and `GET /api/usage` to the `/api/usage` group.
    public func addRoutes(to group: RouterGroup<UserContext>, api: RouterGroup<AppRequestContext>) {
        group.get(use: summary)
        api.post("integrations/:id/usage", use: report)
    }

    /// A service token with `usage:report` reports one call, or several, it made itself; the same
    /// `idempotency_key` twice records it once (201 the first time, 200 with the stored event after). A report adds
    /// to the spending budgets are checked against, so it needs a scope of its own, is rate-limited per token the
    /// way provider checks are per user, and is audited with the event it recorded.
    @Sendable func report(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard case .service(let token)? = context.identity else {
            if context.identity == nil { throw KeyhavenError.unauthenticated }
            throw KeyhavenError.forbidden("Only service tokens can report usage.")
        }
        guard token.scopes.contains(.usageReport) else {
            throw KeyhavenError.forbidden("This token lacks the usage:report scope.")
        }
        try await reports.count(token: token.id, on: limiter)
        let id = try UUID.path(context)
        let integration = try await integrations.find(id: id)
        try Policy.require(.service(workspace: token.workspaceID), .useIntegration, in: integration.ownerID)
        let decoded = try await ReportUsageRequest.read(request, context: context)
        let valid = try decoded.body.validated(decoded.errors)
        let cost = await prices.cost(
            integration.type, model: valid.model, usage: valid.tokens, ownerID: integration.ownerID)
        if let cost, cost > UsageBounds.eventCostMicros {
            let reason = "at the model's price, the report's tokens cost more than the $1000000 one report may hold"
            throw KeyhavenError.validationFailed(["input_tokens": reason, "output_tokens": reason])
        }
        let event = UsageEvent(
            ownerID: integration.ownerID, integrationID: integration.id, type: integration.type, model: valid.model,
            source: .reported, requests: valid.requests, tokens: valid.tokens, costMicros: cost,
            tokenID: token.id,
            idempotencyKey: valid.idempotencyKey, occurredAt: valid.occurredAt)
        let audit = AuditEntry(
            actor: AuditActor(
                kind: .service, id: token.id.lowercasedText, ip: context.clientAddress,
                userAgent: request.headers[.userAgent]),
            action: .usageReport, ownerID: integration.ownerID, integrationID: integration.id,
            detail: [
                "event_id": .string(event.id.lowercasedText), "model": .string(valid.model),
                "requests": .number(Double(valid.requests)), "input_tokens": .number(Double(valid.tokens.inputTokens)),
                "output_tokens": .number(Double(valid.tokens.outputTokens)),
                "cost_micros": event.costMicros.map { .number(Double($0)) } ?? .null,
            ])
        let (stored, created) = try await usage.report(event, audit: audit)
        return Response.json(status: created ? .created : .ok, UsageEventResponse(event: stored))
    }

    /// Totals per day, model or integration of a workspace, or of one integration; CSV for `Accept: text/csv`.
    @Sendable func summary(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        let parameters = request.uri.queryParameters
        let grouping: UsageGrouping
        if let text = parameters["group_by"].map(String.init) {
            guard let parsed = UsageGrouping(rawValue: text) else {
                throw KeyhavenError.badRequest("group_by must be day, model or integration.")
            }
            grouping = parsed
        } else {
            grouping = .day
        }
        let (from, to) = try Self.period(
            from: parameters["from"].map(String.init), to: parameters["to"].map(String.init))
        var workspace = try WorkspaceParameter.query(request, default: context.user.id)
        var integrationID: UUID?
        if let text = parameters["integration_id"].map(String.init) {
            guard let id = UUID(text: text) else { throw KeyhavenError.badRequest("integration_id must be a UUID.") }
            let integration = try await access.integration(id, .view, for: context.user)
            if parameters["workspace_id"] != nil, integration.ownerID != workspace { throw KeyhavenError.notFound }
            workspace = integration.ownerID
            integrationID = id
        } else {
            _ = try await access.require(.view, in: workspace, for: context.user)
        }
        let query = UsageQuery(ownerID: workspace, integrationID: integrationID, from: from, to: to, grouping: grouping)
        let body = UsageSummaryResponse(query: query, rows: try await usage.summary(query))
        if (request.headers[.accept] ?? "").lowercased().contains("text/csv") {
            return Response(
                status: .ok,
                headers: [
                    .contentType: "text/csv; charset=utf-8",
                    .contentDisposition: "attachment; filename=\"usage-\(from)-\(to).csv\"",
                ],
                body: .init(byteBuffer: ByteBuffer(string: body.csv)))
        }
        return Response.json(status: .ok, body)
    }

    /// `from` and `to` as `yyyy-MM-dd`: by default the current month so far (UTC). A period whose `from` is after
    /// its `to` is empty.
    ///
    /// - Throws: `KeyhavenError.badRequest` for a date that is not a real day.
    static func period(from: String?, to: String?, now: Date = Date()) throws -> (String, String) {
        func day(_ text: String, _ name: String) throws -> Date {
            guard let date = UsageDays.date(text) else {
                throw KeyhavenError.badRequest("\(name) must be a date, yyyy-MM-dd.")
            }
            return date
        }
        let end = try to.map { try day($0, "to") } ?? now
        let start = try from.map { try day($0, "from") } ?? Budgets.monthStart(min(end, now))
        return (start.utcDay, end.utcDay)
    }
}
