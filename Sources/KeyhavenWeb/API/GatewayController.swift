import Foundation
import HTTPTypes
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import NIOCore
import NIOHTTP1

/// What one gateway request came to, for usage and metrics.
public struct GatewayUse: Sendable {
    public var integration: Integration
    public var tokenID: UUID
    /// The provider's status, or Keyhaven's own when the provider was not reached.
    public var status: Int
    /// What the answer said about its model and usage; nil when no answer was relayed.
    public var metered: Gateway.Metered?
    public var at: Date
}

/// `/gateway/{integration_id}/<provider path>` (SPEC §13): a backend's provider request, forwarded with the stored
/// credential injected. Only service tokens with `gateway:use` may call it, presented the way the provider's SDK
/// presents a key (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key`).
public struct GatewayController: Sendable {
    let gateway: Gateway
    let tokens: any TokenStore
    let integrations: any IntegrationStore
    let budgets: Budgets
    let record: @Sendable (GatewayUse) async -> Void

    /// Creates the controller; `record` receives every request that reached the point of being forwarded.
    public init(
        gateway: Gateway, tokens: any TokenStore, integrations: any IntegrationStore, budgets: Budgets,
        record: @escaping @Sendable (GatewayUse) async -> Void
    ) {
        self.gateway = gateway
        self.tokens = tokens
        self.integrations = integrations
        self.budgets = budgets
        self.record = record
    }

    /// The methods forwarded.
    static let methods: [HTTPRequest.Method] = [.get, .post, .put, .patch, .delete]

    /// Adds the gateway's routes.
    public func addRoutes(to router: Router<AppRequestContext>) {
        for method in Self.methods {
            router.on("/gateway/:id/**", method: method, use: forward)
        }
    }

    @Sendable func forward(_ request: Request, context: AppRequestContext) async throws -> Response {
        let token = try await authenticate(request)
        guard let idText = context.parameters.get("id"), let id = UUID(text: idText) else { throw KeyhavenError.notFound }
        let (integration, credentials) = try await integrations.gatewayTarget(id: id) { integration, ownerDisabled in
            try Policy.require(.service(workspace: token.workspaceID), .useIntegration, in: integration.ownerID)
            guard Gateway.providers.contains(integration.type) else {
                throw KeyhavenError.badRequest("The gateway forwards only to openai, anthropic and gemini integrations.")
            }
            if ownerDisabled { throw KeyhavenError.forbidden("The integration's owner is disabled.") }
            guard integration.enabled else { throw KeyhavenError.integrationDisabled }
        }
        try await budgets.admit(integration)

        let prefix = "/gateway/\(idText)"
        let path = String(request.uri.path.dropFirst(prefix.count))
        let forwarded = Gateway.Request(
            method: HTTPMethod(rawValue: request.method.rawValue), path: path.isEmpty ? "/" : path,
            query: request.uri.query, headers: request.headers.map { ($0.name.rawName, $0.value) },
            contentLength: request.headers[.contentLength].flatMap { Int($0) })
        let upstream: Gateway.Response
        do {
            upstream = try await gateway.forward(
                forwarded, body: request.body, integration: integration, credentials: credentials)
        } catch let refusal as Gateway.Refusal {
            let error = Self.error(refusal)
            await record(GatewayUse(integration: integration, tokenID: token.id, status: Int(error.status.code), metered: nil, at: Date()))
            throw error
        }

        var headers = HTTPFields()
        for (name, value) in upstream.headers {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        headers[Self.integrationHeader] = integration.id.lowercasedText
        let use = GatewayUse(integration: integration, tokenID: token.id, status: upstream.status, metered: nil, at: Date())
        let record = record
        return Response(
            status: HTTPResponse.Status(code: upstream.status), headers: headers,
            body: Hummingbird.ResponseBody(contentLength: upstream.contentLength) { writer in
                let metered = await upstream.relay { try await writer.write($0) }
                var finished = use
                finished.metered = metered
                await record(finished)
                try await writer.finish(nil)
            })
    }

    /// The header that names the integration that answered.
    static let integrationHeader = HTTPField.Name("Keyhaven-Integration")!

    /// The service token presented in any of the headers providers' SDKs use for their key.
    ///
    /// - Throws: `KeyhavenError.unauthenticated` without a valid service token, `.forbidden` without `gateway:use`.
    func authenticate(_ request: Request) async throws -> APIToken {
        var presented: String?
        if let authorization = request.headers[.authorization], authorization.count > 7,
            authorization.prefix(7).lowercased() == "bearer "
        {
            presented = authorization.dropFirst(7).trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        } else if let key = request.headers[Self.anthropicKey] ?? request.headers[Self.geminiKey] {
            presented = key.trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        }
        guard let presented, presented.hasPrefix("kh_svc_"),
            let (token, _) = try await tokens.authenticate(token: presented), token.kind == .service
        else { throw KeyhavenError.unauthenticated }
        guard token.scopes.contains(.gatewayUse) else {
            throw KeyhavenError.forbidden("This token lacks the gateway:use scope.")
        }
        return token
    }

    static let anthropicKey = HTTPField.Name("x-api-key")!
    static let geminiKey = HTTPField.Name("x-goog-api-key")!

    static func error(_ refusal: Gateway.Refusal) -> KeyhavenError {
        switch refusal {
        case .invalidPath:
            .badRequest("The provider path cannot be forwarded: it must stay within the provider's API.")
        case .invalidBody:
            .badRequest("The request body is longer than its Content-Length.")
        case .endpointNotAllowed:
            .providerUnreachable("The provider's endpoint is not allowed by the egress policy.")
        case .unreachable:
            .providerUnreachable("The provider could not be reached.")
        }
    }
}
