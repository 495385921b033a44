import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices

/// The caller's personal access tokens (SPEC §5). Only a browser session or an external JWT may manage them:
/// a token that could mint tokens would outlive its own scopes.
public struct TokenController: Sendable {
    let accounts: Accounts

    /// Creates the controller.
    public init(accounts: Accounts) {
        self.accounts = accounts
    }

    /// Adds the routes to the `/api/tokens` group.
    public func addRoutes(to group: RouterGroup<UserContext>) {
        group.get(use: list)
        group.post(use: create)
        group.delete(":id", use: revoke)
    }

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        Response.json(status: .ok, TokenListResponse(tokens: try await accounts.tokens(of: context.caller(request))))
    }

    @Sendable func create(_ request: Request, context: UserContext) async throws -> Response {
        let (secret, record) = try await accounts.createPersonalToken(by: context.caller(request)) {
            let decoded = try await CreateTokenRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors).orThrow()
        }
        return Response.json(status: .created, CreatedTokenResponse(token: record, secret: secret))
    }

    @Sendable func revoke(_ request: Request, context: UserContext) async throws -> Response {
        try await accounts.revokePersonalToken(try UUID.path(context), by: context.caller(request))
        return Response(status: .noContent)
    }
}
