import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices

/// `GET /api/audit`: a workspace's audit events, newest first (SPEC §8, §12): the caller's personal workspace by
/// default; in an organization, owners and admins see every event, members and viewers those of its integrations.
public struct AuditController: Sendable {
    let service: AuditService

    /// Creates the controller.
    public init(service: AuditService) {
        self.service = service
    }

    /// Adds the route to the `/api/audit` group.
    public func addRoutes(to group: RouterGroup<UserContext>) {
        group.get(use: list)
    }

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        let query = request.uri.queryParameters
        let limit = query["limit"].map { Int(String($0)) } ?? 50
        guard let limit, (1...200).contains(limit) else {
            throw KeyhavenError.badRequest("limit must be a whole number from 1 to 200.")
        }
        var integrationID: UUID?
        if let text = query["integration_id"].map(String.init) {
            guard let id = UUID(uuidString: text) else {
                throw KeyhavenError.badRequest("integration_id must be a UUID.")
            }
            integrationID = id
        }
        var before: Int64?
        if let text = query["cursor"].map(String.init) {
            guard let seq = Cursor.decodeSeq(text) else { throw KeyhavenError.badRequest("The cursor is not valid.") }
            before = seq
        }
        let events = try await service.events(
            in: try WorkspaceParameter.query(request, default: context.user.id), integrationID: integrationID,
            by: context.caller(request), limit: limit + 1, before: before)
        let shown = Array(events.prefix(limit))
        let next = events.count > limit ? shown.last.map { Cursor.encode($0.seq) } : nil
        return Response.json(status: .ok, AuditPageResponse(events: shown, nextCursor: next))
    }
}
