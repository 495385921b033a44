import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import JWTKit
import KeyhavenCore
import KeyhavenProviders
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import _CryptoExtras

/// Local stand-ins for the six providers, on real HTTP on 127.0.0.1. They check what they receive the way the
/// real services do: the Google fake verifies the RS256 assertion with the account's public key, the AWS fake
/// recomputes the SigV4 signature from the secret it knows, the Azure fake checks the form, the key-based fakes
/// the exact headers. Anything they do not expect is recorded in ``unexpected`` and answered with 500.
public final class FakeProviders: Sendable {
    /// The base URL of the running fakes (`http://127.0.0.1:PORT`).
    public let baseURL: URL
    private let task: Task<Void, any Error>
    let state: FakeState
    /// A URL where nothing listens.
    public let downURL: URL

    // Credentials the fakes accept.
    public static let openAIKey = "sk-fake-good-openai-0000000000"
    public static let openAIRestrictedKey = "sk-fake-restricted-openai-0000"
    public static let anthropicKey = "sk-ant-fake-good-anthropic-0000"
    public static let geminiKey = "AIza" + String(repeating: "G", count: 35)
    public static let awsAccessKeyID = "AKIAFAKEGOODKEY00001"
    public static let awsSecret = "fakeGoodSecretKeyForTheAWSFake0000000000"
    public static let awsExpiredAccessKeyID = "ASIAFAKEEXPIREDKEY01"
    public static let azureTenant = "11111111-2222-3333-4444-555555555555"
    public static let azureClient = "66666666-7777-8888-9999-000000000000"
    public static let azureSecret = "fake~azure~good~secret"
    public static let azureExpiredSecret = "fake~azure~expired~secret"
    /// The key id of ``azureSecret`` in the application's password credentials.
    public static let azureSecretKeyID = "aaaaaaaa-0000-0000-0000-000000000001"

    /// A service account whose key the Google fake trusts.
    public let googleAccount: [String: JSONValue]
    /// The same account with a key the fake does not know.
    public let googleStrangerAccount: [String: JSONValue]

    /// What the fakes did not expect.
    public var unexpected: [String] { state.unexpected.withLock { $0 } }

    /// How often the OpenAI fake listed models for ``openAIKey``.
    public var openAIListings: Int { state.openAIListings.withLock { $0 } }

    /// What the fakes share while running.
    final class FakeState: Sendable {
        let unexpected = Mutex<[String]>([])
        let base = Mutex<String>("")
        /// AWS access keys by id: the IAM user, the secret, and whether it is active (IAM keeps at most two).
        let awsKeys = Mutex<[String: FakeAWSKey]>([
            awsAccessKeyID: FakeAWSKey(user: "keyhaven", secret: awsSecret, active: true, created: 0)
        ])
        /// The Azure application's client secrets by key id.
        let azureSecrets = Mutex<[String: String]>([azureSecretKeyID: azureSecret])
        /// Google service-account key ids that were deleted: assertions signed with them are refused.
        let deletedGoogleKeys = Mutex<Set<String>>([])
        /// Google service-account key ids that exist.
        let googleKeys = Mutex<[String]>(["fake-key-1"])
        /// Bearer tokens handed out, and for what: `google:<key id>` or `graph:<client id>`.
        let issuedTokens = Mutex<[String: String]>([:])
        let serial = Mutex<Int>(0)
        let refuseRotated = Mutex<Bool>(false)
        /// While true, Microsoft Graph refuses to remove application passwords.
        let refuseRemovals = Mutex<Bool>(false)
        /// Run by Microsoft Graph's `addPassword` before it makes the secret: a test's way into that moment.
        let whileAddingPassword = Mutex<(@Sendable () async -> Void)?>(nil)
        let googleKeyTimes = Mutex<[String: Date]>([:])
        let azureNames = Mutex<[String: String]>([:])
        /// Every model request the fakes answered (the gateway's traffic), in order.
        let modelCalls = Mutex<[FakeModelCall]>([])
        /// How often the OpenAI fake listed models for its good key (each verification of it lists them once).
        let openAIListings = Mutex<Int>(0)
        /// While true, streams stop after their first event until released.
        let holdStreams = Mutex<Bool>(false)
        /// Slow streams whose reader went away before their end.
        let abandonedStreams = Mutex<Int>(0)
        /// Bytes of the large download written.
        let largeAnswerSent = Mutex<Int>(0)

        func next() -> Int {
            serial.withLock {
                $0 += 1
                return $0
            }
        }

        func fail(_ what: String) -> Response {
            unexpected.withLock { $0.append(what) }
            return FakeProviders.json(.internalServerError, ["error": ["message": "unexpected request: \(what)"]])
        }
    }

    /// Starts the fakes; call ``stop()`` when done. With a `delay`, every provider answers that much later (so
    /// a browser test can watch an integration being verified).
    public static func start(delay: Duration = .zero) async throws -> FakeProviders {
        let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let stranger = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let portBox = Mutex<Int?>(nil)
        let state = FakeState()
        let keys = JWTKeyCollection()
        await keys.add(
            rsa: try Insecure.RSA.PublicKey(pem: key.publicKey.pemRepresentation), digestAlgorithm: .sha256,
            kid: "fake-key-1")
        let router = Router()
        if delay > .zero { router.add(middleware: DelayMiddleware(delay: delay)) }
        addRoutes(router, keys: keys, state: state)
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portBox.withLock { $0 = channel.localAddress?.port } },
            logger: Logger(label: "fake-providers", factory: { _ in SwiftLogNoOpLogHandler() }))
        let task = Task { try await app.run() }
        var port: Int?
        for _ in 0..<500 {
            port = portBox.withLock { $0 }
            if port != nil { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        guard let port else { throw TestSetupError("the fake providers did not start") }
        state.base.withLock { $0 = "http://127.0.0.1:\(port)" }
        return FakeProviders(
            baseURL: URL(string: "http://127.0.0.1:\(port)")!, task: task, state: state, downURL: try closedPortURL(),
            key: key, stranger: stranger)
    }

    private init(
        baseURL: URL, task: Task<Void, any Error>, state: FakeState, downURL: URL, key: _RSA.Signing.PrivateKey,
        stranger: _RSA.Signing.PrivateKey
    ) {
        self.baseURL = baseURL
        self.task = task
        self.state = state
        self.downURL = downURL
        func account(_ pem: String, keyID: String) -> [String: JSONValue] {
            [
                "type": "service_account", "project_id": "fake-project", "private_key_id": .string(keyID),
                "private_key": .string(pem), "client_email": "vault@fake-project.iam.gserviceaccount.com",
                "client_id": "1234567890", "token_uri": "https://oauth2.googleapis.com/token",
            ]
        }
        googleAccount = account(key.pemRepresentation, keyID: "fake-key-1")
        googleStrangerAccount = account(stranger.pemRepresentation, keyID: "fake-key-2")
    }

    /// Stops the server.
    public func stop() async {
        task.cancel()
        _ = await task.result
    }

    /// The endpoint overrides that point every provider at these fakes, under `prefix` (`/hang` for fakes that
    /// never answer).
    public func endpoints(prefix: String = "") -> ProviderEndpoints {
        let root = baseURL.absoluteString + prefix
        var overrides: [IntegrationType: URL] = [
            .openai: URL(string: "\(root)/openai")!, .anthropic: URL(string: "\(root)/anthropic")!,
            .gemini: URL(string: "\(root)/gemini")!, .googleCloud: URL(string: "\(root)/google/token")!,
            .aws: URL(string: "\(root)/aws")!, .azure: URL(string: "\(root)/azure")!,
        ]
        if let azure = IntegrationType(rawValue: "azure_openai") {
            overrides[azure] = URL(string: "\(root)/azure_openai/%7Bresource%7D")!
        }
        if let vertex = IntegrationType(rawValue: "vertex_ai") {
            overrides[vertex] = URL(string: "\(root)/vertex/%7Bregion%7D")!
        }
        for provider in Self.catalogProviders {
            if let type = IntegrationType(rawValue: provider.id) {
                overrides[type] = URL(string: "\(root)/\(provider.id)")!
            }
        }
        return ProviderEndpoints(overrides: overrides)
    }

    /// Endpoints where nothing listens.
    public func downEndpoints() -> ProviderEndpoints {
        ProviderEndpoints(overrides: Dictionary(uniqueKeysWithValues: IntegrationType.allCases.map { ($0, downURL) }))
    }

    /// A URL where nothing listens: port 1 on loopback. A port that was bound and closed again could be handed to
    /// another test's fakes a moment later (tests run concurrently), which would then receive this test's requests;
    /// ephemeral ports never include port 1.
    public static func closedPortURL() throws -> URL {
        URL(string: "http://127.0.0.1:1")!
    }

    /// A loopback port free at the moment of asking, for a server a test starts itself.
    public static func freePort() throws -> Int {
        // Bind a port, then close it: nothing listens there afterwards.
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress?.port ?? 0
        try channel.close().wait()
        return port
    }

    // MARK: Routes

    static func json(_ status: HTTPResponse.Status, _ object: [String: Any]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object)) ?? Data()
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func xml(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "text/xml"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func form(_ request: Request) async throws -> [String: String] {
        let body = try await request.body.collect(upTo: 1 << 16)
        var fields: [String: String] = [:]
        for pair in String(buffer: body).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map {
                String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            fields[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return fields
    }

    static func addRoutes(_ router: Router<BasicRequestContext>, keys: JWTKeyCollection, state: FakeState) {
        let fail = state.fail
        // What went wrong, for a test driving the fakes from another process.
        router.get("/_unexpected") { _, _ -> Response in json(.ok, ["unexpected": state.unexpected.withLock { $0 }]) }
        // Answers nothing for a minute: "the provider is hanging".
        router.on("/hang/**", method: .get) { _, _ -> Response in
            try await Task.sleep(for: .seconds(60))
            return Response(status: .ok)
        }
        router.on("/hang/**", method: .post) { _, _ -> Response in
            try await Task.sleep(for: .seconds(60))
            return Response(status: .ok)
        }

        router.get("/openai/v1/models") { request, _ -> Response in
            guard request.uri.query == nil else { return fail("openai: a query string") }
            let authorization = request.headers[.authorization] ?? ""
            switch authorization {
            case "Bearer \(openAIKey)":
                state.openAIListings.withLock { $0 += 1 }
                if let organization = request.headers[HTTPField.Name("OpenAI-Organization")!],
                    organization != "org-fake"
                {
                    return fail("openai: organization \(organization)")
                }
                return json(.ok, ["object": "list", "data": [["id": "gpt-4o"], ["id": "gpt-4o-mini"], ["id": "o3"]]])
            case "Bearer \(openAIRestrictedKey)":
                return json(
                    .unauthorized,
                    [
                        "error": [
                            "message":
                                "You have insufficient permissions for this operation. Missing scopes: api.model.read."
                        ]
                    ])
            case "Bearer sk-fake-ratelimited-0000000000":
                return json(.tooManyRequests, ["error": ["message": "Rate limit reached."]])
            case _ where authorization.hasPrefix("Bearer sk-"):
                // Like the real service, it echoes the key it was given.
                return json(
                    .unauthorized,
                    [
                        "error": [
                            "message":
                                "Incorrect API key provided: \(authorization.dropFirst(7)). You can "
                                + "find your API key at https://platform.openai.com/account/api-keys."
                        ]
                    ])
            default:
                return fail("openai: authorization header \(authorization.prefix(12))")
            }
        }
        router.get("/anthropic/v1/models") { request, _ -> Response in
            guard request.headers[HTTPField.Name("anthropic-version")!] == "2023-06-01" else {
                return fail("anthropic: version header")
            }
            guard request.headers[.authorization] == nil, request.uri.query == nil else {
                return fail("anthropic: key outside x-api-key")
            }
            guard let key = request.headers[HTTPField.Name("x-api-key")!] else {
                return fail("anthropic: no x-api-key")
            }
            if key == anthropicKey { return json(.ok, ["data": [["id": "claude-sonnet-4"]], "has_more": false]) }
            return json(
                .unauthorized,
                ["type": "error", "error": ["type": "authentication_error", "message": "invalid x-api-key"]])
        }
        router.get("/gemini/v1beta/models") { request, _ -> Response in
            guard request.uri.query == nil else { return fail("gemini: the key in the URL") }
            guard let key = request.headers[HTTPField.Name("x-goog-api-key")!] else {
                return fail("gemini: no x-goog-api-key")
            }
            if key == geminiKey {
                return json(.ok, ["models": [["name": "models/gemini-2.5-pro"], ["name": "models/gemini-2.5-flash"]]])
            }
            return json(
                .badRequest,
                [
                    "error": [
                        "code": 400, "message": "API key not valid. Please pass a valid API key.",
                        "status": "INVALID_ARGUMENT",
                    ]
                ])
        }
        router.post("/google/token") { request, _ -> Response in
            let fields = try await form(request)
            guard fields["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer",
                let assertion = fields["assertion"]
            else {
                return fail("google: form \(fields.keys.sorted())")
            }
            struct Claims: JWTPayload {
                var iss: IssuerClaim
                var scope: String
                var aud: AudienceClaim
                var iat: IssuedAtClaim
                var exp: ExpirationClaim
                func verify(using algorithm: some JWTAlgorithm) async throws { try exp.verifyNotExpired() }
            }
            let keyID = jwtKeyID(assertion) ?? ""
            guard let claims = try? await keys.verify(assertion, as: Claims.self),
                !state.deletedGoogleKeys.withLock({ $0.contains(keyID) }),
                keyID == "fake-key-1" || !state.refuseRotated.withLock({ $0 })
            else {
                return json(.badRequest, ["error": "invalid_grant", "error_description": "Invalid JWT Signature."])
            }
            let expectedAudience = state.base.withLock { $0 } + "/google/token"
            guard claims.iss.value == "vault@fake-project.iam.gserviceaccount.com",
                claims.aud.value.contains(expectedAudience),
                claims.exp.value.timeIntervalSince(claims.iat.value) <= 3600, !claims.scope.isEmpty
            else {
                return json(.badRequest, ["error": "invalid_grant", "error_description": "Invalid JWT: bad claims."])
            }
            let token = "ya29.fake-\(state.next())"
            state.issuedTokens.withLock { $0[token] = "google:\(keyID)" }
            return json(.ok, ["access_token": token, "expires_in": 3599, "token_type": "Bearer"])
        }
        router.post("/aws") { request, _ -> Response in await aws(request, state: state, fail: fail) }
        addManagementRoutes(router, keys: keys, state: state)
        addModelRoutes(router, state: state)
        addCatalogRoutes(router, state: state)
        router.post("/azure/:tenant/oauth2/v2.0/token") { request, context -> Response in
            let fields = try await form(request)
            let scopes = ["https://management.azure.com/.default", "https://graph.microsoft.com/.default"]
            guard fields["grant_type"] == "client_credentials", let scope = fields["scope"], scopes.contains(scope),
                let client = fields["client_id"], let secret = fields["client_secret"]
            else { return fail("azure: form \(fields.keys.sorted())") }
            guard context.parameters.get("tenant") == azureTenant else {
                return json(
                    .badRequest,
                    [
                        "error": "invalid_request",
                        "error_description":
                            "AADSTS90002: Tenant '\(context.parameters.get("tenant") ?? "")' not found.",
                    ])
            }
            guard client == azureClient else {
                return json(
                    .badRequest,
                    [
                        "error": "unauthorized_client",
                        "error_description":
                            "AADSTS700016: Application with identifier '\(client)' was not found in the directory.",
                    ])
            }
            switch secret {
            case _
            where state.azureSecrets.withLock({ $0.values.contains(secret) })
                && (secret == azureSecret || scope.hasPrefix("https://graph.")
                    || !state.refuseRotated.withLock({ $0 })):
                let token = "eyJ.fake-\(state.next())"
                if scope.hasPrefix("https://graph.") { state.issuedTokens.withLock { $0[token] = "graph:\(client)" } }
                return json(.ok, ["access_token": token, "expires_in": 3599, "token_type": "Bearer"])
            case azureExpiredSecret:
                return json(
                    .unauthorized,
                    [
                        "error": "invalid_client",
                        "error_description":
                            "AADSTS7000222: The provided client secret keys for app '\(client)' are expired.",
                    ])
            default:
                return json(
                    .unauthorized,
                    [
                        "error": "invalid_client",
                        "error_description":
                            "AADSTS7000215: Invalid client secret provided. Ensure the secret being "
                            + "sent in the request is the client secret value, not the client secret "
                            + "ID, for a secret added to app '\(client)'. Secret sent: \(secret)",
                    ])
            }
        }
        router.on("/**", method: .get) { request, _ in fail("GET \(request.uri.path)") }
        router.on("/**", method: .post) { request, _ in fail("POST \(request.uri.path)") }
    }
}

/// Answers every request `delay` later.
struct DelayMiddleware: RouterMiddleware {
    let delay: Duration

    func handle(
        _ request: Request, context: BasicRequestContext, next: (Request, BasicRequestContext) async throws -> Response
    ) async throws -> Response {
        if request.uri.path != "/_unexpected" { try await Task.sleep(for: delay) }
        return try await next(request, context)
    }
}
