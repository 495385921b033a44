import AsyncHTTPClient
import Foundation
import KeyhavenCore
import NIOCore
import NIOHTTP1

/// The default endpoint of each provider, and the operator's overrides (`KEYHAVEN_PROVIDER_<NAME>_URL`).
public struct ProviderEndpoints: Sendable {
    public var overrides: [IntegrationType: URL]

    public init(overrides: [IntegrationType: URL] = [:]) {
        self.overrides = overrides
    }

    public static let defaults: [IntegrationType: URL] = [
        .openai: URL(string: "https://api.openai.com")!,
        .anthropic: URL(string: "https://api.anthropic.com")!,
        .gemini: URL(string: "https://generativelanguage.googleapis.com")!,
        .googleCloud: URL(string: "https://oauth2.googleapis.com/token")!,
        .aws: URL(string: "https://sts.amazonaws.com")!,
        .azure: URL(string: "https://login.microsoftonline.com")!,
    ]

    /// The override for `type`, if the operator set one.
    public func override(_ type: IntegrationType) -> URL? { overrides[type] }

    /// The override, else the default.
    public func base(_ type: IntegrationType) -> URL { overrides[type] ?? Self.defaults[type]! }
}

/// Everything a verifier needs besides the credentials.
public struct VerificationContext: Sendable {
    public var client: HTTPClient
    public var endpoints: ProviderEndpoints
    public var egress: EgressPolicy
    /// The whole request's deadline (SPEC §7: 10 s; connecting alone gets 5 s, set on the client).
    public var timeout: Duration

    public init(client: HTTPClient, endpoints: ProviderEndpoints, egress: EgressPolicy, timeout: Duration = .seconds(10)) {
        self.client = client
        self.endpoints = endpoints
        self.egress = egress
        self.timeout = timeout
    }

    /// An HTTP client with Keyhaven's limits: 5 s to connect, 10 s to read, no redirects (a redirect could lead
    /// to an address the egress policy refuses).
    public static func makeClient() -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(10)))
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    struct Reply {
        var status: Int
        var body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
    }

    /// Sends one request within the egress policy and the deadline; failures become outcomes.
    func send(
        _ method: HTTPMethod, _ url: URL, headers: [(String, String)] = [], body: Data? = nil
    ) async -> Result<Reply, VerificationOutcome> {
        do {
            try await egress.check(url)
        } catch {
            return .failure(.endpointNotAllowed)
        }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        do {
            let response = try await client.execute(request, timeout: .seconds(Int64(timeout.components.seconds)))
            let buffer = try await response.body.collect(upTo: 1 << 20)
            return .success(Reply(status: Int(response.status.code), body: Data(buffer.readableBytesView)))
        } catch {
            return .failure(.unreachable)
        }
    }
}

extension VerificationContext {
    /// What a token request came to: a finished result, or a provider error for the caller to map.
    enum TokenReply {
        case finished(VerificationResult)
        case refused(Reply)
    }

    /// An OAuth token request: POSTs `form`; on 200 the answer must hold an `access_token` to count as connected.
    func requestToken(_ url: URL, form: String, details: [String: JSONValue]) async -> TokenReply {
        switch await send(.POST, url, headers: [("Content-Type", "application/x-www-form-urlencoded")], body: Data(form.utf8)) {
        case .failure(let outcome):
            return .finished(VerificationResult(outcome: outcome))
        case .success(let reply) where reply.status == 200:
            guard reply.json["access_token"] is String else {
                return .finished(VerificationResult(outcome: .unexpectedResponse, providerMessage: "No access token was returned."))
            }
            return .finished(VerificationResult(outcome: .connected, details: details))
        case .success(let reply):
            return .refused(reply)
        }
    }
}

/// Checks one provider's credentials against the real service (or the operator's override of it).
public protocol Verifier: Sendable {
    func verify(_ credentials: Credentials, config: [String: JSONValue], in context: VerificationContext) async
        -> VerificationResult
}

/// Every provider's verifier, by integration type.
public enum Verifiers {
    public static func verifier(for type: IntegrationType) -> any Verifier {
        switch type {
        case .openai: KeyBasedVerifier.openai
        case .anthropic: KeyBasedVerifier.anthropic
        case .gemini: KeyBasedVerifier.gemini
        case .googleCloud: GoogleCloudVerifier()
        case .aws: AWSVerifier()
        case .azure: AzureVerifier()
        }
    }

    /// Runs the check for `type`, timing it, and removes any echo of the credentials from what the provider said.
    public static func verify(
        _ type: IntegrationType, credentials: Credentials, config: [String: JSONValue], in context: VerificationContext
    ) async -> VerificationResult {
        let start = ContinuousClock.now
        var result = await verifier(for: type).verify(credentials, config: config, in: context)
        result.latency = start.duration(to: .now)
        result.providerMessage = result.providerMessage.map { Sanitizer.clean($0, secrets: credentials.secretValues) }
        return result
    }
}

/// Maps the statuses every provider shares; `body` supplies the provider's own words.
func commonOutcome(status: Int) -> VerificationOutcome {
    switch status {
    case 200..<300: .connected
    case 401: .invalidCredentials
    case 403: .insufficientPermissions
    case 429: .rateLimited
    case 502, 503, 504: .unreachable
    default: .unexpectedResponse
    }
}

/// `{"error": {"message": …}}` or `{"error": "…", "error_description": …}`.
func providerMessage(_ json: [String: Any]) -> String? {
    if let error = json["error"] as? [String: Any] { return error["message"] as? String }
    return (json["error_description"] as? String) ?? (json["error"] as? String)
}
