import AsyncHTTPClient
import Foundation
import KeyhavenCore
import NIOCore
import NIOHTTP1

/// The providers' management APIs that automatic rotation calls (SPEC §15).
public enum ProviderService: String, Sendable, CaseIterable {
    case awsIAM = "AWS_IAM"
    case googleIAM = "GOOGLE_IAM"
    case azureGraph = "AZURE_GRAPH"

    /// The real service.
    public var defaultURL: URL {
        let text =
            switch self {
            case .awsIAM: "https://iam.amazonaws.com"
            case .googleIAM: "https://iam.googleapis.com"
            case .azureGraph: "https://graph.microsoft.com"
            }
        // These literals are valid URLs.
        return URL(string: text) ?? URL(fileURLWithPath: "/")
    }
}

/// The default endpoint of each provider, and the operator's overrides (`KEYHAVEN_PROVIDER_<NAME>_URL`, and
/// `KEYHAVEN_PROVIDER_AWS_IAM_URL`, `…_GOOGLE_IAM_URL`, `…_AZURE_GRAPH_URL` for the management APIs).
public struct ProviderEndpoints: Sendable {
    public var overrides: [IntegrationType: URL]
    public var services: [ProviderService: URL]

    public init(overrides: [IntegrationType: URL] = [:], services: [ProviderService: URL] = [:]) {
        self.overrides = overrides
        self.services = services
    }

    /// The management API's override, else the real one.
    public func base(_ service: ProviderService) -> URL { services[service] ?? service.defaultURL }

    /// The real providers' endpoints, from the catalog.
    public static func defaultURL(_ type: IntegrationType) -> URL {
        // An integration whose provider left the catalog has nowhere to go: an address nothing answers on.
        type.entry.flatMap { URL(string: $0.baseURL) } ?? URL(fileURLWithPath: "/")
    }

    /// The API of an integration of `type` with `config`: the override or the catalog's base URL, with its
    /// settings filled in (``ProviderEntry/baseURL(config:override:)``); nil when they do not fit.
    public func base(_ type: IntegrationType, config: [String: JSONValue]) -> URL? {
        type.entry?.baseURL(config: config, override: overrides[type])
    }

    /// The override for `type`, if the operator set one.
    public func override(_ type: IntegrationType) -> URL? { overrides[type] }

    /// The override, else the default.
    public func base(_ type: IntegrationType) -> URL { overrides[type] ?? Self.defaultURL(type) }
}

/// The outbound HTTP client to providers, as verifiers and rotators use it: the connection pool, where each
/// provider is, the egress policy every request is checked against, and the deadline of one request.
public struct ProviderClient: Sendable {
    public var client: HTTPClient
    public var endpoints: ProviderEndpoints
    public var egress: EgressPolicy
    /// The whole request's deadline (SPEC §7: 10 s; connecting alone gets 5 s, set on the client).
    public var timeout: Duration

    public init(
        client: HTTPClient, endpoints: ProviderEndpoints, egress: EgressPolicy, timeout: Duration = .seconds(10)
    ) {
        self.client = client
        self.endpoints = endpoints
        self.egress = egress
        self.timeout = timeout
    }

    /// An HTTP client with Keyhaven's limits: 5 s to connect, 10 s to read, no redirects (a redirect could lead
    /// to an address the egress policy refuses). `pinning` maps a host name to the address it must connect to.
    public static func makeClient(pinning: [String: String] = [:]) -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(10)))
        configuration.httpVersion = .http1Only
        configuration.dnsOverride = pinning
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    struct Reply: Error {
        var status: Int
        var body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
    }

    /// A request that was not made or not answered, as the result a verifier returns.
    struct Refused: Error {
        var outcome: VerificationOutcome
        var detail: VerificationDetail?

        /// The detail in English.
        var message: String? { detail?.text }

        var result: VerificationResult { VerificationResult(outcome: outcome, detail: detail) }

        /// A request that cannot be built from the stored settings or credentials.
        static func unbuildable(_ why: VerificationDetail.UnbuiltRequest) -> Refused {
            Refused(outcome: .unexpectedResponse, detail: .requestNotBuilt(why))
        }
    }

    /// Sends one request within the egress policy and the deadline; failures become outcomes. The host is
    /// resolved once, checked, and that address is the one connected to.
    func send(
        _ method: HTTPMethod, _ url: URL, origin: EgressPolicy.Origin = .operatorConfigured,
        headers: [(String, String)] = [], body: Data? = nil
    ) async -> Result<Reply, Refused> {
        guard let host = url.host, !host.isEmpty, ["http", "https"].contains(url.scheme ?? "") else {
            return .failure(.unbuildable(.endpointNotHTTP))
        }
        // A header that would split the request, or carry bytes beyond ASCII, is never sent.
        for (name, value) in headers {
            guard !name.isEmpty, name.utf8.allSatisfy(ASCII.isKeyCharacter), value.utf8.allSatisfy(ASCII.isPrintable)
            else {
                return .failure(.unbuildable(.unsendableHeader))
            }
        }
        let address: String
        do {
            address = try await egress.address(for: url, origin: origin)
        } catch EgressPolicy.Refusal.unresolvable(let name) {
            return .failure(Refused(outcome: .unreachable, detail: .unresolvableHost(name)))
        } catch {
            return .failure(Refused(outcome: .endpointNotAllowed))
        }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let literal = EgressPolicy.parseLiteral(host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))) != nil
        // An address literal needs no lookup; a name gets a client pinned to the address just checked.
        let client = literal ? self.client : Self.makeClient(pinning: [host: address])
        let result: Result<Reply, Refused>
        do {
            let response = try await client.execute(request, timeout: .seconds(Int64(timeout.components.seconds)))
            let buffer = try await response.body.collect(upTo: 1 << 20)
            result = .success(Reply(status: Int(response.status.code), body: Data(buffer.readableBytesView)))
        } catch {
            result = .failure(Refused(outcome: .unreachable))
        }
        if !literal { try? await client.shutdown() }
        return result
    }
}

extension ProviderClient {
    /// What a token request came to: a finished result, or a provider error for the caller to map.
    enum TokenReply {
        case finished(VerificationResult)
        case refused(Reply)
    }

    /// An OAuth token request: POSTs `form`; on 200 the answer must hold an `access_token` to count as connected.
    func requestToken(
        _ url: URL, origin: EgressPolicy.Origin = .operatorConfigured, form: String, details: [String: JSONValue]
    ) async -> TokenReply {
        switch await accessToken(url, origin: origin, form: form) {
        case .failure(let refused): .finished(refused.result)
        case .success(.success): .finished(VerificationResult(outcome: .connected, details: details))
        case .success(.failure(let reply)): .refused(reply)
        }
    }

    /// An OAuth token request that keeps the token: the token, the provider's refusal, or why no answer came.
    func accessToken(
        _ url: URL, origin: EgressPolicy.Origin = .operatorConfigured, form: String
    ) async -> Result<Result<String, Reply>, Refused> {
        let headers = [("Content-Type", "application/x-www-form-urlencoded")]
        switch await send(.POST, url, origin: origin, headers: headers, body: Data(form.utf8)) {
        case .failure(let refused):
            return .failure(refused)
        case .success(let reply) where reply.status == 200:
            guard let token = reply.json["access_token"] as? String else {
                return .failure(Refused(outcome: .unexpectedResponse, detail: .noAccessToken))
            }
            return .success(.success(token))
        case .success(let reply):
            return .success(.failure(reply))
        }
    }
}

/// Checks one provider's credentials against the real service (or the operator's override of it).
public protocol Verifier: Sendable {
    func verify(_ credentials: Credentials, config: [String: JSONValue], in context: ProviderClient) async
        -> VerificationResult
}

/// Every provider's verifier, by integration type.
public enum Verifiers {
    public static func verifier(for type: IntegrationType) -> (any Verifier)? {
        guard let entry = type.entry else { return nil }
        return switch entry.credential.kind {
        case .apiKey: KeyBasedVerifier(entry: entry)
        case .googleServiceAccount: entry.verify == nil ? GoogleCloudVerifier() : VertexVerifier(entry: entry)
        case .awsKeys: AWSVerifier()
        case .azureServicePrincipal: AzureVerifier()
        }
    }

    /// Runs the check for `type`, timing it, and removes any echo of the credentials from what the provider said.
    ///
    /// Stored credentials and settings are checked against today's input rules first: a row written before a rule
    /// was tightened is reported as `unexpected_response` for that integration instead of reaching a request.
    public static func verify(
        _ type: IntegrationType, credentials: Credentials, config: [String: JSONValue], in context: ProviderClient
    ) async -> VerificationResult {
        let start = ContinuousClock.now
        var result: VerificationResult
        let settingProblems = CredentialValidator.validateConfig(type: type, config)
        if type.entry == nil {
            result = VerificationResult(outcome: .unexpectedResponse, detail: .providerNotInCatalog)
        } else if case .failure(let problems) = CredentialValidator.validate(type: type, credentials.wireValue) {
            result = VerificationResult(
                outcome: .unexpectedResponse, detail: .storedCredentialsMalformed(fields: problems.fieldList))
        } else if !settingProblems.isEmpty {
            result = VerificationResult(
                outcome: .unexpectedResponse, detail: .storedSettingsInvalid(fields: settingProblems.fieldList))
        } else if let verifier = verifier(for: type) {
            result = await verifier.verify(credentials, config: config, in: context)
        } else {
            result = VerificationResult(outcome: .unexpectedResponse, detail: .providerNotInCatalog)
        }
        result.latency = start.duration(to: .now)
        // The stored English is the whole text cleaned, as it always was; the detail's values are cleaned one by one.
        result.providerMessage = result.providerMessage.map { Sanitizer.clean($0, secrets: credentials.secretValues) }
        result.detail = result.detail?.mapValues { Sanitizer.clean($0, secrets: credentials.secretValues) }
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
