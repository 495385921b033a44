import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices

/// Fallback routes of a workspace (SPEC §13): `/api/routes?workspace_id=`, `/api/routes/{name}`. Members edit them;
/// anyone who sees the workspace reads them.
public struct RoutesController: Sendable {
    let service: UsageService

    /// Creates the controller.
    public init(service: UsageService) {
        self.service = service
    }

    /// Adds the routes to the `/api/routes` group.
    public func addRoutes(to group: RouterGroup<UserContext>) {
        group.get(use: list)
        group.put(":name", use: put)
        group.delete(":name", use: delete)
    }

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        let found = try await service.routes(
            in: try WorkspaceParameter.query(request, default: context.user.id), by: context.caller(request))
        return Response.json(
            status: .ok, JSONValue.object(["routes": .array(found.map { RouteResponse(route: $0).json })]))
    }

    @Sendable func put(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let name = try Self.name(context)
        let workspace = try WorkspaceParameter.query(request, default: context.user.id)
        let route = try await service.putRoute(name, in: workspace, by: context.caller(request)) {
            let decoded = try await RouteRequest.read(request, context: context)
            var errors = decoded.errors
            let texts = decoded.body.integrationIDs?.value ?? []
            let ids = texts.compactMap { UUID(text: $0) }
            if ids.count != texts.count || ids.isEmpty || ids.count > GatewayRoute.maximumLength
                || Set(ids).count != ids.count
            {
                errors["integration_ids"] = "must list 1 to \(GatewayRoute.maximumLength) different integration ids"
            }
            guard errors.problems.isEmpty else { throw errors.error }
            return ids
        }
        return Response.json(status: .ok, RouteResponse(route: route))
    }

    @Sendable func delete(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let name = try Self.name(context)
        try await service.deleteRoute(
            name, in: try WorkspaceParameter.query(request, default: context.user.id), by: context.caller(request))
        return Response(status: .noContent)
    }

    /// The route name of the path; one that could not name a route is not found.
    static func name(_ context: UserContext) throws -> String {
        guard let name = context.parameters.get("name"), GatewayRoute.isValidName(name) else {
            throw KeyhavenError.notFound
        }
        return name
    }
}

/// `PUT /api/routes/{name}`: `{integration_ids}`.
struct RouteRequest: RequestBody {
    static let knownFields: Set<String>? = ["integration_ids"]

    var integrationIDs: Input<[String]>?

    enum CodingKeys: String, CodingKey {
        case integrationIDs = "integration_ids"
    }
}

/// One route.
struct RouteResponse: ResponseBody {
    let route: GatewayRoute

    var json: JSONValue {
        .object([
            "name": .string(route.name), "workspace_id": wireID(route.ownerID),
            "integration_ids": .array(route.integrationIDs.map(wireID)), "updated_at": wireDate(route.updatedAt),
        ])
    }
}
