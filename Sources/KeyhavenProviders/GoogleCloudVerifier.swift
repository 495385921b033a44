import Foundation
import JWTKit
import KeyhavenCore

/// Google Cloud: an RS256 JWT assertion signed with the service account's key, exchanged for an access token.
struct GoogleCloudVerifier: Verifier {
    /// Where Google's token endpoints live; a service account's `token_uri` elsewhere is not used.
    static let allowedHosts: Set<String> = ["oauth2.googleapis.com", "accounts.google.com", "www.googleapis.com"]
    static let defaultScope = "https://www.googleapis.com/auth/cloud-platform"

    struct Assertion: JWTPayload {
        var iss: IssuerClaim
        var scope: String
        var aud: AudienceClaim
        var iat: IssuedAtClaim
        var exp: ExpirationClaim

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// The token endpoint: the operator's override, else the account's `token_uri` if it is one of Google's,
    /// else Google's default.
    static func tokenURL(_ account: [String: JSONValue], in context: ProviderClient)
        -> Result<(URL, EgressPolicy.Origin), VerificationOutcome>
    {
        if let override = context.endpoints.override(.googleCloud) { return .success((override, .operatorConfigured)) }
        guard let text = account["token_uri"]?.stringValue else {
            return .success((ProviderEndpoints.defaultURL(.googleCloud), .operatorConfigured))
        }
        guard let url = URL(string: text), context.egress.acceptsUserEndpoint(url, allowedHosts: allowedHosts) else {
            return .failure(.endpointNotAllowed)
        }
        return .success((url, .userSupplied))
    }

    /// The token request's form: a one-hour RS256 assertion for `scopes`, signed with the account's key; nil when
    /// the key cannot be read.
    static func assertionForm(email: String, pem: String, keyID: String, scopes: [String], audience: URL) async
        -> String?
    {
        do {
            let keys = JWTKeyCollection()
            await keys.add(
                rsa: try Insecure.RSA.PrivateKey(pem: pem), digestAlgorithm: .sha256, kid: JWKIdentifier(string: keyID))
            let now = Date()
            let assertion = try await keys.sign(
                Assertion(
                    iss: .init(value: email), scope: scopes.joined(separator: " "),
                    aud: .init(value: [audience.absoluteString]),
                    iat: .init(value: now), exp: .init(value: now.addingTimeInterval(3600))),
                kid: JWKIdentifier(string: keyID))
            return "grant_type=\(formEncode("urn:ietf:params:oauth:grant-type:jwt-bearer"))&assertion=\(assertion)"
        } catch {
            return nil
        }
    }

    func verify(_ credentials: Credentials, config: [String: JSONValue], in context: ProviderClient) async
        -> VerificationResult
    {
        guard case .googleServiceAccount(let account) = credentials, let email = account["client_email"]?.stringValue,
            let pem = account["private_key"]?.stringValue, let keyID = account["private_key_id"]?.stringValue
        else { return VerificationResult(outcome: .invalidCredentials) }
        let (url, origin): (URL, EgressPolicy.Origin)
        switch Self.tokenURL(account, in: context) {
        case .success(let allowed): (url, origin) = allowed
        case .failure(let outcome):
            return VerificationResult(outcome: outcome, detail: .tokenURINotGoogle)
        }
        let scopes: [String] =
            if case .array(let items)? = config["scopes"] { items.compactMap(\.stringValue) } else {
                [Self.defaultScope]
            }
        guard let form = await Self.assertionForm(email: email, pem: pem, keyID: keyID, scopes: scopes, audience: url)
        else {
            return VerificationResult(outcome: .invalidCredentials, detail: .privateKeyUnreadable)
        }
        switch await context.requestToken(url, origin: origin, form: form, details: ["client_email": .string(email)]) {
        case .finished(let result):
            return result
        case .refused(let reply):
            let json = reply.json
            let message = providerMessage(json)
            let outcome: VerificationOutcome =
                switch (reply.status, json["error"] as? String) {
                case (400, "invalid_grant"?), (401, _): .invalidCredentials
                case (400, "unauthorized_client"?), (403, _): .insufficientPermissions
                default: commonOutcome(status: reply.status)
                }
            return VerificationResult(outcome: outcome, detail: message.map { .provider(code: nil, message: $0) })
        }
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
func formEncode(_ value: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
}
