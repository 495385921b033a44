import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices

/// Usage reports from backends that call providers themselves, and usage analytics (SPEC §13).
public struct UsageController: Sendable {
    let service: UsageService

    /// Creates the controller.
    public init(service: UsageService) {
        self.service = service
    }

    /// Adds `POST /api/integrations/{id}/usage` to `api` and `GET /api/usage` to the `/api/usage` group.
    public func addRoutes(to group: RouterGroup<UserContext>, api: RouterGroup<AppRequestContext>) {
        group.get(use: summary)
        api.post("integrations/:id/usage", use: report)
    }

    /// A service token with `usage:report` reports one call, or several, it made itself; the same
    /// `idempotency_key` twice records it once (201 the first time, 200 with the stored event after).
    @Sendable func report(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (stored, created) = try await service.report(
            on: try UUID.path(context), by: context.identity, ip: context.clientAddress,
            userAgent: request.headers[.userAgent]
        ) {
            let decoded = try await ReportUsageRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors)
        }
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
        let workspace = try WorkspaceParameter.query(request, default: context.user.id)
        var scope = UsageService.Scope.workspace(workspace)
        if let text = parameters["integration_id"].map(String.init) {
            guard let id = UUID(text: text) else { throw KeyhavenError.badRequest("integration_id must be a UUID.") }
            scope = .integration(id, workspace: parameters["workspace_id"] != nil ? workspace : nil)
        }
        let (query, rows) = try await service.summary(
            scope, by: context.caller(request), from: from, to: to, grouping: grouping)
        let body = UsageSummaryResponse(query: query, rows: rows)
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
    package static func period(from: String?, to: String?, now: Date = Date()) throws -> (String, String) {
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
