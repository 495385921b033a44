import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway

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
        _ = try await services.access.require(.view, in: workspace, for: viewer.user)
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
        var values = try await panel(
            ownerID: workspace, integrationID: nil, from: start, to: end, language: page.language)
        let integrations = try await services.usage.summary(
            UsageQuery(ownerID: workspace, integrationID: nil, from: start, to: end, grouping: .integration))
        var names: [String: String] = [:]
        for integration in try await services.integrations.list(ownerID: workspace, limit: 1_000, after: nil) {
            names[integration.id.lowercasedText] = integration.name
        }
        values["has_integration_rows"] = !integrations.isEmpty
        values["integration_rows"] = integrations.map { row in
            var fields = Self.row(row, language: page.language)
            fields["name"] = names[row.key] ?? page.language.text("deleted_integration")
            fields["href"] = names[row.key] == nil ? nil : "/integrations/\(row.key)"
            return fields
        }
        let workspaceQuery = workspace == viewer.user.id ? "" : "workspace=\(IntegrationPages.idText(workspace))&"
        values["nav_usage"] = true
        values["workspace_id"] = IntegrationPages.idText(workspace)
        values["personal"] = workspace == viewer.user.id
        values["workspace_name"] = viewer.workspaceName(workspace, language: page.language) ?? ""
        values["csv_href"] = "/api/usage?\(workspaceQuery)from=\(start)&to=\(end)&group_by=model"
        return renderer.page(
            "usage", title: page.language.text("usage_title"), values: values, language: page.language, viewer: viewer,
            path: page.path)
    }

    /// `POST /integrations/{id}/limits`: the detail page's limits form (owners and admins).
    @Sendable func setLimits(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws
        -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let integration = try await services.access.integration(
            try UUID.path(context), .manageBudgets, for: viewer.user)
        // The form's fields are the API's, checked by the same rules: an empty field is no limit.
        func number(_ name: String) -> Input<Double>? {
            guard let text = form[name].flatMap(Self.trimmed) else { return nil }
            return Double(text).map { .value($0) } ?? .invalid
        }
        let input = LimitsRequest(
            monthlyBudgetUSD: number("monthly_budget_usd"), requestsPerMinute: number("requests_per_minute"),
            tokensPerMinute: number("tokens_per_minute"))
        guard case .success(var limits) = input.validated(FieldErrors()) else {
            return Response.redirect(
                to: "/integrations/\(IntegrationPages.idText(integration.id))?done=limits_invalid", type: .normal)
        }
        // The form does not show the permission for unmetered endpoints (set through the API): it stays as it was.
        limits.allowsUnmeteredEndpoints =
            try await services.limits.limits(for: [integration.id])[integration.id]?.allowsUnmeteredEndpoints ?? false
        try await services.limits.setLimits(
            limits, subject: integration.id, ownerID: integration.ownerID,
            actor: IntegrationPages.actor(request, context: context, viewer: viewer))
        services.budgets.forget(integration.id)
        return Response.redirect(
            to: "/integrations/\(IntegrationPages.idText(integration.id))?done=limits_saved", type: .normal)
    }

    static func trimmed(_ text: String) -> String? {
        let value = text.trimmingCharacters(in: .whitespaces)
        return value.isEmpty ? nil : value
    }

    /// The values of a usage panel: this period's totals, the two charts, the table by model and the budget gauge
    /// of the workspace or of one integration.
    func panel(ownerID: UUID, integrationID: UUID?, from: String, to: String, language: Language) async throws
        -> [String: Any]
    {
        func query(_ grouping: UsageGrouping) -> UsageQuery {
            UsageQuery(ownerID: ownerID, integrationID: integrationID, from: from, to: to, grouping: grouping)
        }
        let daily = try await services.usage.summary(query(.day))
        let models = try await services.usage.summary(query(.model))
        let total = daily.total
        let dollars = { (micros: Int64) in Self.dollars(micros) }
        let costDays = UsageCharts.days(from: from, to: to, rows: daily) { [$0.costMicros] }
        let tokenDays = UsageCharts.days(from: from, to: to, rows: daily) {
            [$0.tokens.inputTokens, $0.tokens.outputTokens]
        }
        var values: [String: Any] = [
            "from": from, "to": to,
            "total": Self.row(total, language: language),
            "cost_chart": UsageCharts.bars(
                costDays, title: language.text("daily_cost"), classes: ["chart-bar"], format: dollars),
            "tokens_chart": UsageCharts.bars(
                tokenDays, title: language.text("daily_tokens"), classes: ["chart-bar-input", "chart-bar-output"],
                format: { Self.count($0) }),
            "model_rows": models.map { row in
                var fields = Self.row(row, language: language)
                fields["model"] = row.key.isEmpty ? language.text("unknown_model") : row.key
                return fields
            },
            "no_usage": daily.isEmpty,
        ]
        let standing = try await services.budgets.standing(subject: integrationID ?? ownerID, ownerID: ownerID)
        if let percent = standing.percent, let budget = standing.limits.monthlyBudgetMicros {
            let used = language.text("budget_used")
                .replacingOccurrences(of: "{percent}", with: String(percent))
                .replacingOccurrences(of: "{spent}", with: dollars(standing.spentMicros))
                .replacingOccurrences(of: "{budget}", with: dollars(budget))
            values["budget"] = [
                "gauge": UsageCharts.gauge(percent: percent, title: used), "text": used, "warning": standing.warning,
            ]
        }
        values["limits"] = [
            "monthly_budget_usd": standing.limits.monthlyBudgetMicros.map { Self.plainDollars($0) } ?? "",
            "requests_per_minute": standing.limits.requestsPerMinute.map(String.init) ?? "",
            "tokens_per_minute": standing.limits.tokensPerMinute.map(String.init) ?? "",
        ]
        return values
    }

    /// One table row: requests, tokens and cost, "no price" for what could not be priced.
    static func row(_ row: UsageTotals, language: Language) -> [String: Any] {
        var cost = dollars(row.costMicros)
        if row.unpricedRequests > 0 {
            cost =
                row.unpricedRequests == row.requests
                ? language.text("no_price") : "\(cost) + \(language.text("no_price"))"
        }
        return [
            "requests": count(row.requests), "input_tokens": count(row.tokens.inputTokens),
            "output_tokens": count(row.tokens.outputTokens), "cost": cost,
            "cost_micros": row.costMicros, "unpriced": row.unpricedRequests > 0,
        ]
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
