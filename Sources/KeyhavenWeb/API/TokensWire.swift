import Foundation
import KeyhavenCore
import KeyhavenServices

// The wire types of /api/tokens (SPEC §5).

/// `POST /api/tokens` and `POST /api/orgs/{id}/service-tokens`: `{name, scopes, expires_in_days?}`.
struct CreateTokenRequest: RequestBody {
    static let knownFields: Set<String>? = ["name", "scopes", "expires_in_days"]

    var name: Input<String>?
    var scopes: Input<[String]>?
    var expiresInDays: Input<Double>?

    enum CodingKeys: String, CodingKey {
        case name, scopes
        case expiresInDays = "expires_in_days"
    }

    /// The scopes a personal token may hold, and the problem named when others are asked for.
    static let personal: (scopes: Set<TokenScope>, problem: String) = (
        [.integrationsRead, .integrationsWrite], "must list integrations:read and/or integrations:write"
    )
    /// The scopes a service token of an organization may hold.
    static let service: (scopes: Set<TokenScope>, problem: String) = (
        TokenScope.service, "must list credentials:read, gateway:use and/or usage:report"
    )

    func validated(
        _ errors: FieldErrors, allowed: (scopes: Set<TokenScope>, problem: String) = personal, now: Date = Date()
    ) -> Result<NewToken, FieldErrors> {
        var errors = errors
        let name = TextRule.text(name, "name", required: true, maximumLength: 100, errors: &errors)
        let listed = (self.scopes?.value ?? []).map(TokenScope.init(rawValue:))
        let scopes = Set(listed.compactMap { $0 })
        if listed.isEmpty || listed.contains(nil) || !scopes.isSubset(of: allowed.scopes) {
            errors["scopes"] = allowed.problem
        }
        var expiresAt: Date?
        if let expiresInDays {
            if let days = expiresInDays.value, days >= 1, days <= 365, days == days.rounded() {
                expiresAt = now.addingTimeInterval(days * 86400)
            } else {
                errors["expires_in_days"] = "must be a whole number of days from 1 to 365"
            }
        }
        guard errors.isEmpty, let name else { return .failure(errors) }
        return .success(NewToken(name: name, scopes: scopes, expiresAt: expiresAt))
    }
}

/// A token's record; never its secret.
struct TokenResponse: ResponseBody {
    let token: APIToken

    var json: JSONValue {
        .object([
            "id": wireID(token.id),
            "name": .string(token.name),
            "kind": .string(token.kind.rawValue),
            "workspace_id": token.workspaceID.map(wireID) ?? .null,
            "scopes": .array(token.scopes.map(\.rawValue).sorted().map(JSONValue.string)),
            "created_at": wireDate(token.createdAt),
            "last_used_at": wireDate(token.lastUsedAt),
            "expires_at": wireDate(token.expiresAt),
            "revoked_at": wireDate(token.revokedAt),
        ])
    }
}

/// `GET /api/tokens`.
struct TokenListResponse: ResponseBody {
    let tokens: [APIToken]

    var json: JSONValue { .object(["tokens": .array(tokens.map { TokenResponse(token: $0).json })]) }
}

/// `POST /api/tokens`: the record and, this once, the secret.
struct CreatedTokenResponse: ResponseBody {
    let token: APIToken
    let secret: String

    var json: JSONValue { .object(["token": TokenResponse(token: token).json, "secret": .string(secret)]) }
}
