import Foundation
import Hummingbird
import KeyhavenCore

/// The caller's personal access tokens (SPEC §5). Only a browser session or an external JWT may manage them:
/// a token that could mint tokens would outlive its own scopes.
public struct TokenController: Sendable {
    let tokens: any TokenStore

    /// Creates the controller.
    public init(tokens: any TokenStore) {
        self.tokens = tokens
    }

    /// Adds the routes to the `/api/tokens` group.
    public func addRoutes(to group: RouterGroup<UserContext>) {
        group.get(use: list)
        group.post(use: create)
        group.delete(":id", use: revoke)
    }

    func requireInteractive(_ context: UserContext) throws {
        if case .personalToken = context.credential {
            throw KeyhavenError.forbidden("Personal access tokens cannot manage tokens; sign in instead.")
        }
    }

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        try requireInteractive(context)
        let list = try await tokens.list(userID: context.user.id)
        return Response.json(status: .ok, JSONValue.object(["tokens": .array(list.map { $0.dto() })]))
    }

    @Sendable func create(_ request: Request, context: UserContext) async throws -> Response {
        try requireInteractive(context)
        var body = try await JSONBody.read(request, context: context)
        body.rejectUnknown(["name", "scopes", "expires_in_days"])
        let name = body.string("name", required: true, maximumLength: 100)
        var scopes = Set<TokenScope>()
        if case .array(let items)? = body.fields["scopes"], !items.isEmpty {
            for item in items {
                guard let scope = item.stringValue.flatMap(TokenScope.init(rawValue:)), scope != .credentialsRead else {
                    body.errors["scopes"] = "must list integrations:read and/or integrations:write"
                    break
                }
                scopes.insert(scope)
            }
        } else {
            body.errors["scopes"] = "must list integrations:read and/or integrations:write"
        }
        var expiresAt: Date?
        if let days = body.fields["expires_in_days"], days != .null {
            guard case .number(let count) = days, count >= 1, count <= 365, count == count.rounded() else {
                body.errors["expires_in_days"] = "must be a whole number of days from 1 to 365"
                try body.validate()
                return Response(status: .badRequest)
            }
            expiresAt = Date().addingTimeInterval(count * 86400)
        }
        try body.validate()
        let (secret, record) = try await tokens.create(
            kind: .personal, userID: context.user.id, name: name!, scopes: scopes, expiresAt: expiresAt,
            audit: AuditEntry(actor: context.actor(request), action: .tokenCreate, ownerID: context.user.id))
        return Response.json(status: .created, JSONValue.object(["token": record.dto(), "secret": .string(secret)]))
    }

    @Sendable func revoke(_ request: Request, context: UserContext) async throws -> Response {
        try requireInteractive(context)
        try await tokens.revoke(
            id: try UUID.path(context), userID: context.user.id,
            audit: AuditEntry(actor: context.actor(request), action: .tokenRevoke, ownerID: context.user.id))
        return Response(status: .noContent)
    }
}
