import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices
import KeyhavenWeb

/// The Usage page of a workspace (`/usage`), the usage panel of an integration's detail page, and the form that
/// sets an integration's limits (SPEC §13): daily cost and tokens as server-rendered SVG, a table by model, the
/// budget gauge.
struct UsagePages: Sendable {
    let services: WebPages.Services
    let renderer: PageRenderer

    @Sendable func page(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws
        -> Response
    {
        let parameters = request.uri.queryParameters
        let workspace = try IntegrationPages.workspace(parameters["workspace"].map(String.init), viewer: viewer)
        let caller = viewer.caller(request, context)
        try await services.integrations.workspace(workspace, .view, by: caller)
        let from = parameters["from"].map(String.init).flatMap { $0.isEmpty ? nil : $0 }
        let to = parameters["to"].map(String.init).flatMap { $0.isEmpty ? nil : $0 }
        var (start, end) = try UsageController.period(from: from, to: to)
        // A chart shows at most a year of days: a longer period shows its last year.
        if let first = UsageDays.date(start), let last = UsageDays.date(end),
            last.timeIntervalSince(first) > 365 * 86_400
        {
            start = last.addingTimeInterval(-365 * 86_400).utcDay
        }
        if start > end { start = end }
        let panel = try await panel(.workspace(workspace), by: caller, from: start, to: end, texts: page.texts)
        let (_, integrations) = try await services.usage.summary(
            .workspace(workspace), by: caller, from: start, to: end, grouping: .integration)
        var names: [String: String] = [:]
        for integration in try await services.integrations.list(
            in: workspace, by: caller, limit: 1_000, after: nil
        ).integrations {
            names[integration.id.lowercasedText] = integration.name
        }
        let workspaceQuery = workspace == viewer.user.id ? "" : "workspace=\(IntegrationPages.idText(workspace))&"
        let view = UsagePage(
            panel: panel,
            integrationRows: integrations.map { row in
                UsageRow(
                    row, label: names[row.key] ?? page.texts["deleted_integration"],
                    href: names[row.key] == nil ? nil : "/integrations/\(row.key)", texts: page.texts)
            },
            hasIntegrationRows: !integrations.isEmpty, workspaceID: IntegrationPages.idText(workspace),
            personal: workspace == viewer.user.id,
            workspaceName: viewer.workspaceName(workspace, texts: page.texts) ?? "",
            csvHref: "/api/usage?\(workspaceQuery)from=\(start)&to=\(end)&group_by=model")
        return renderer.page(
            "usage", view, title: page.texts["usage_title"], for: page, section: .usage, workspace: workspace)
    }

    /// `POST /integrations/{id}/limits`: the detail page's limits form (owners and admins).
    @Sendable func setLimits(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws
        -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let id = try UUID.path(context)
        // The form's fields are the API's, checked by the same rules: an empty field is no limit.
        func number(_ name: String) -> Input<Double>? {
            guard let text = form[name].flatMap(Self.trimmed) else { return nil }
            return Double(text).map { .value($0) } ?? .invalid
        }
        let input = LimitsRequest(
            monthlyBudgetUSD: number("monthly_budget_usd"), requestsPerMinute: number("requests_per_minute"),
            tokensPerMinute: number("tokens_per_minute"))
        let validated = input.validated(FieldErrors())
        do {
            _ = try await services.usage.setLimits(of: .integration(id), by: viewer.caller(request, context)) {
                current in
                guard case .success(var limits) = validated else { throw KeyhavenError.validationFailed([:]) }
                // The form does not show the permission for unmetered endpoints (set through the API): it stays.
                limits.allowsUnmeteredEndpoints = current.allowsUnmeteredEndpoints
                return limits
            }
        } catch KeyhavenError.validationFailed {
            return Response.redirect(
                to: "/integrations/\(IntegrationPages.idText(id))?done=limits_invalid", type: .normal)
        }
        return Response.redirect(to: "/integrations/\(IntegrationPages.idText(id))?done=limits_saved", type: .normal)
    }

    static func trimmed(_ text: String) -> String? {
        let value = text.trimmingCharacters(in: .whitespaces)
        return value.isEmpty ? nil : value
    }

    /// A usage panel: this period's totals, the two charts, the table by model and the budget gauge of the
    /// workspace or of one integration.
    func panel(
        _ scope: UsageService.Scope, by caller: UserCaller, from: String, to: String, texts: Texts
    ) async throws -> UsagePanel {
        let overview = try await services.usage.overview(scope, by: caller, from: from, to: to)
        let (daily, models, standing) = (overview.daily, overview.models, overview.standing)
        let total = daily.total
        let dollars = { (micros: Int64) in Self.dollars(micros) }
        let costDays = UsageCharts.days(from: from, to: to, rows: daily) { [$0.costMicros] }
        let tokenDays = UsageCharts.days(from: from, to: to, rows: daily) {
            [$0.tokens.inputTokens, $0.tokens.outputTokens]
        }
        var budget: BudgetView?
        if let percent = standing.percent, let limit = standing.limits.monthlyBudgetMicros {
            let used = texts.format(
                "budget_used",
                ["percent": String(percent), "spent": dollars(standing.spentMicros), "budget": dollars(limit)])
            budget = BudgetView(
                gauge: UsageCharts.gauge(percent: percent, title: used), text: used, warning: standing.warning)
        }
        return UsagePanel(
            from: from, to: to, total: UsageRow(total, label: "", texts: texts),
            costChart: UsageCharts.bars(
                costDays, title: texts["daily_cost"], classes: ["chart-bar"], format: dollars),
            tokensChart: UsageCharts.bars(
                tokenDays, title: texts["daily_tokens"], classes: ["chart-bar-input", "chart-bar-output"],
                format: { Self.count($0) }),
            modelRows: models.map { row in
                UsageRow(row, label: row.key.isEmpty ? texts["unknown_model"] : row.key, texts: texts)
            },
            noUsage: daily.isEmpty, budget: budget,
            limits: LimitsValues(
                monthlyBudgetUSD: standing.limits.monthlyBudgetMicros.map { Self.plainDollars($0) } ?? "",
                requestsPerMinute: standing.limits.requestsPerMinute.map(String.init) ?? "",
                tokensPerMinute: standing.limits.tokensPerMinute.map(String.init) ?? ""))
    }

    /// The cost of a row, "no price" for what could not be priced.
    static func cost(_ row: UsageTotals, texts: Texts) -> String {
        let cost = dollars(row.costMicros)
        guard row.unpricedRequests > 0 else { return cost }
        return row.unpricedRequests == row.requests ? texts["no_price"] : "\(cost) + \(texts["no_price"])"
    }

    /// `$1.234567` → `$1.2346`: four places, enough to tell small requests apart.
    static func dollars(_ micros: Int64) -> String {
        "$" + String(format: "%.4f", Double(micros) / 1_000_000)
    }

    /// The budget as typed in the form: dollars without needless zeros.
    static func plainDollars(_ micros: Int64) -> String {
        var text = UsageSummaryResponse.dollars(micros)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }

    /// A whole number with thousands separated by a thin space, the same in both languages.
    static func count(_ value: Int64) -> String {
        let digits = String(value.magnitude)
        var grouped = ""
        for (index, digit) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { grouped.append("\u{202F}") }
            grouped.append(digit)
        }
        return (value < 0 ? "-" : "") + grouped
    }
}

/// The Usage page of a workspace.
struct UsagePage: Sendable {
    let panel: UsagePanel
    /// Usage by integration (a deleted one is named as such).
    let integrationRows: [UsageRow]
    let hasIntegrationRows: Bool
    let workspaceID: String
    let personal: Bool
    let workspaceName: String
    let csvHref: String
}

/// A usage panel: totals, charts, the table by model, the budget and the limits as the form shows them.
struct UsagePanel: Sendable {
    let from: String
    let to: String
    let total: UsageRow
    /// Server-rendered SVG (numbers, dates and texts, each escaped).
    let costChart: String
    let tokensChart: String
    let modelRows: [UsageRow]
    let noUsage: Bool
    let budget: BudgetView?
    let limits: LimitsValues
}

/// One table row of usage: requests, tokens and cost.
struct UsageRow: Sendable {
    /// The model or the integration the row is about.
    let label: String
    let href: String?
    let requests: String
    let inputTokens: String
    let outputTokens: String
    let cost: String
    let costMicros: Int64

    init(_ row: UsageTotals, label: String, href: String? = nil, texts: Texts) {
        self.label = label
        self.href = href
        requests = UsagePages.count(row.requests)
        inputTokens = UsagePages.count(row.tokens.inputTokens)
        outputTokens = UsagePages.count(row.tokens.outputTokens)
        cost = UsagePages.cost(row, texts: texts)
        costMicros = row.costMicros
    }
}

/// The monthly budget's gauge.
struct BudgetView: Sendable {
    /// Server-rendered SVG.
    let gauge: String
    let text: String
    let warning: Bool
}

/// The limits as the form shows them: empty for no limit.
struct LimitsValues: Sendable {
    let monthlyBudgetUSD: String
    let requestsPerMinute: String
    let tokensPerMinute: String
}
