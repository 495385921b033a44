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

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        try context.requireInteractive()
        let list = try await tokens.list(userID: context.user.id)
        return Response.json(status: .ok, TokenListResponse(tokens: list))
    }

    @Sendable func create(_ request: Request, context: UserContext) async throws -> Response {
        try context.requireInteractive()
        let decoded = try await CreateTokenRequest.read(request, context: context)
        let new = try decoded.body.validated(decoded.errors).orThrow()
        let (secret, record) = try await tokens.create(
            kind: .personal, userID: context.user.id, name: new.name, scopes: new.scopes, expiresAt: new.expiresAt,
            audit: AuditEntry(actor: context.actor(request), action: .tokenCreate, ownerID: context.user.id))
        return Response.json(status: .created, CreatedTokenResponse(token: record, secret: secret))
    }

    @Sendable func revoke(_ request: Request, context: UserContext) async throws -> Response {
        try context.requireInteractive()
        try await tokens.revoke(
            id: try UUID.path(context), userID: context.user.id,
            audit: AuditEntry(actor: context.actor(request), action: .tokenRevoke, ownerID: context.user.id))
        return Response(status: .noContent)
    }
}
