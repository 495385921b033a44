import Foundation
import KeyhavenCore
import Synchronization

/// Short-lived Google access tokens for service accounts, as the gateway injects them (Vertex AI, SPEC §16): minted
/// with the account's RS256 assertion at its token endpoint, and kept until ten minutes before their hour is up.
/// Keyed by the caller's choice (an integration and its credential version), so a replaced key gets its own.
public final class GoogleTokens: Sendable {
    private let cached = Mutex<[String: (token: String, until: ContinuousClock.Instant)]>([:])
    /// How long a token is used: Google's last an hour; the last ten minutes are left for the requests in flight.
    static let lifetime = Duration.seconds(50 * 60)

    /// No tokens yet.
    public init() {}

    /// Why no token came.
    public enum Failure: Error, Sendable {
        /// The key could not be read, or the token endpoint refused it or is not Google's.
        case refused
        /// The token endpoint could not be reached.
        case unreachable
    }

    /// A token for `account` with the cloud-platform scope, from the cache under `key` or minted now.
    ///
    /// - Throws: ``Failure``.
    public func token(for account: [String: JSONValue], key: String, in context: ProviderClient) async throws -> String
    {
        let now = ContinuousClock.now
        if let hit = cached.withLock({ $0[key] }), hit.until > now { return hit.token }
        switch await Self.mint(account, scopes: [GoogleCloudVerifier.defaultScope], in: context) {
        case .success(let token):
            cached.withLock { cache in
                if cache.count > 10_000 { cache = cache.filter { $0.value.until > now } }
                cache[key] = (token, now + Self.lifetime)
            }
            return token
        case .failure(let failure):
            throw failure
        }
    }

    /// A new token for `account`, or why not.
    static func mint(_ account: [String: JSONValue], scopes: [String], in context: ProviderClient) async -> Result<
        String, Failure
    > {
        guard let email = account["client_email"]?.stringValue, let pem = account["private_key"]?.stringValue,
            let keyID = account["private_key_id"]?.stringValue,
            case .success(let (url, origin)) = GoogleCloudVerifier.tokenURL(account, in: context),
            let form = await GoogleCloudVerifier.assertionForm(
                email: email, pem: pem, keyID: keyID, scopes: scopes, audience: url)
        else { return .failure(.refused) }
        switch await context.accessToken(url, origin: origin, form: form) {
        case .success(.success(let token)): return .success(token)
        case .success(.failure): return .failure(.refused)
        case .failure(let refused): return .failure(refused.outcome == .unreachable ? .unreachable : .refused)
        }
    }
}

/// Vertex AI (and any service-account provider with a check in the catalog): an access token for the account, then
/// the entry's check request with it, in the integration's project and region.
struct VertexVerifier: Verifier {
    let entry: ProviderEntry

    func verify(_ credentials: Credentials, config: [String: JSONValue], in context: ProviderClient) async
        -> VerificationResult
    {
        guard case .googleServiceAccount(let account) = credentials, let check = entry.verify else {
            return VerificationResult(outcome: .invalidCredentials)
        }
        let token: String
        switch await GoogleTokens.mint(account, scopes: [GoogleCloudVerifier.defaultScope], in: context) {
        case .success(let minted): token = minted
        case .failure(.unreachable): return VerificationResult(outcome: .unreachable)
        case .failure(.refused): return VerificationResult(outcome: .invalidCredentials, detail: .noAccessToken)
        }
        guard let base = context.endpoints.base(entry.type, config: config),
            let path = entry.path(check.path, config: config),
            let url = URL(string: base.absoluteString + path)
        else { return ProviderClient.Refused.unbuildable(.endpointWithoutHost).result }
        switch await context.send(
            .GET, url, headers: [("Authorization", "Bearer \(token)"), ("Accept", "application/json")])
        {
        case .failure(let refused):
            return refused.result
        case .success(let reply):
            let outcome = commonOutcome(status: reply.status)
            guard outcome == .connected else {
                return VerificationResult(
                    outcome: outcome, detail: providerMessage(reply.json).map { .provider(code: nil, message: $0) })
            }
            guard KeyBasedVerifier.value(at: check.foundAt, in: reply.body) != nil else {
                return VerificationResult(outcome: .unexpectedResponse, detail: .modelListMissing)
            }
            return VerificationResult(
                outcome: .connected, details: ["client_email": .string(account["client_email"]?.stringValue ?? "")])
        }
    }
}
