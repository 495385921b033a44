import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeyhavenApp
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenProviders
import KeyhavenServices
import KeyhavenStorage
import KeyhavenWeb
import Logging
import NIOCore
import Synchronization

/// How a test request authenticates.
public enum TestAuth: Sendable {
    case anonymous
    /// A session cookie and its CSRF token.
    case session(cookie: String, csrf: String)
    /// A session cookie without the CSRF header.
    case sessionWithoutCSRF(cookie: String)
    /// `Authorization: Bearer <token>`.
    case bearer(String)
}

/// A signed-in test user.
public struct TestUser: Sendable {
    public let id: UUID
    public let email: String
    public let cookie: String
    public let csrf: String

    public var session: TestAuth { .session(cookie: cookie, csrf: csrf) }

    public init(id: UUID, email: String, cookie: String, csrf: String) {
        self.id = id
        self.email = email
        self.cookie = cookie
        self.csrf = csrf
    }
}

/// A decoded test response.
public struct APIResponse: Sendable {
    public let status: HTTPResponse.Status
    public let headers: HTTPFields
    public let body: Data

    /// The body as a JSON object (empty if it is not one).
    public var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:]
    }

    /// The body as text.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The `error.fields` map of an error body.
    public var fields: [String: String] {
        ((json["error"] as? [String: Any])?["fields"] as? [String: String]) ?? [:]
    }
}

/// The whole application over a private database, driven in-process, for API tests.
public struct APIHarness: Sendable {
    public let runtime: KeyhavenRuntime
    public let handle: TestDatabaseHandle
    public let logs: LogCapture
    let client: any TestClientProtocol
    /// Every response seen, for leak scans.
    public let seen: ResponseLog
    /// The port of the gateway's own listener, once bound (``gatewayPort()``).
    let gatewayListening: ListeningPort

    /// The metrics token every harness server is given (production serves no `/metrics` without one); a test of
    /// that default sets it back to nil.
    public static let metricsToken = "test-metrics-token-" + String(repeating: "0", count: 32)

    /// `GET /metrics` as the operator's scraper sends it.
    public func metrics() async throws -> APIResponse {
        try await request(.get, "/metrics", auth: .bearer(Self.metricsToken))
    }

    /// A bcrypt hash of `Fixtures.password`, computed once, so fixtures do not pay for bcrypt each time.
    public static let passwordHash = PasswordHasher.hashBlocking(Fixtures.password)

    /// Runs `body` against a fresh application on `kind`.
    ///
    /// - Parameter checkedResponses: how many responses, the first ones, are kept for the contract check (and
    ///   ``seen``); a test that sends many thousands of requests of the same kinds keeps a sample.
    public static func with(
        _ kind: TestDatabase, live: Bool = false, checkedResponses: Int = .max,
        configure: (inout KeyhavenConfiguration) -> Void = { _ in }, _ body: @Sendable (APIHarness) async throws -> Void
    ) async throws {
        let logs = LogCapture()
        let handle = try await kind.make(logger: logs.logger())
        var configuration = KeyhavenConfiguration(
            database: handle.location, keyring: Fixtures.environmentKeyring(), logLevel: .trace)
        configuration.authRateLimits = .init(loginPerAccount: 1000, loginPerAddress: 1000, signupPerAddress: 1000)
        configuration.checkRateLimit = .init(perUser: 1000)
        // Tests talk to 127.0.0.1 only: without fakes, every provider points at a port where nothing listens, and
        // the background verifier runs only in the tests that ask for it.
        configuration.runVerificationWorker = false
        configuration.egressAllowPrivate = true
        configuration.metricsToken = metricsToken
        let nowhere = try FakeProviders.closedPortURL()
        configuration.providerEndpoints = ProviderEndpoints(
            overrides: Dictionary(uniqueKeysWithValues: IntegrationType.allCases.map { ($0, nowhere) }))
        configure(&configuration)
        do {
            let runtime = try await KeyhavenRuntime.open(
                configuration, allowKeyringCreation: false, logger: logs.logger(), database: handle.database)
            let gatewayListening = ListeningPort()
            let app = try await buildApplication(runtime) { gatewayListening.bound($0.port) }
            try await app.test(live ? .live : .router) { client in
                let harness = APIHarness(
                    runtime: runtime, handle: handle, logs: logs, client: client,
                    seen: ResponseLog(limit: checkedResponses), gatewayListening: gatewayListening)
                try await body(harness)
                try harness.checkContract()
            }
        } catch {
            await handle.close()
            throw error
        }
        await handle.close()
    }

    /// Sends a request; `body` is encoded as JSON unless it is already `Data`.
    @discardableResult
    public func request(
        _ method: HTTPRequest.Method, _ path: String, auth: TestAuth = .anonymous, json body: Any? = nil,
        contentType: String = "application/json", headers extra: HTTPFields = [:]
    ) async throws -> APIResponse {
        var headers = extra
        var buffer: ByteBuffer?
        if let body {
            let data = try (body as? Data) ?? JSONSerialization.data(withJSONObject: body, options: [.fragmentsAllowed])
            buffer = ByteBuffer(bytes: data)
            headers[.contentType] = contentType
        }
        switch auth {
        case .anonymous: break
        case .session(let cookie, let csrf):
            headers[.cookie] = "keyhaven_session=\(cookie)"
            headers[HTTPField.Name("X-CSRF-Token")!] = csrf
        case .sessionWithoutCSRF(let cookie):
            headers[.cookie] = "keyhaven_session=\(cookie)"
        case .bearer(let token):
            headers[.authorization] = "Bearer \(token)"
        }
        let response = try await client.execute(uri: path, method: method, headers: headers, body: buffer)
        let result = APIResponse(
            status: response.status, headers: response.headers, body: Data(response.body.readableBytesView))
        seen.append(method: method, path: path, response: result)
        return result
    }

    /// The port of a live server (nil when driven in-process).
    public var port: Int? { client.port }

    /// The port of the gateway's own listener (`KEYHAVEN_GATEWAY_ADDRESS`), once it takes connections.
    ///
    /// - Throws: `TestSetupError` when the configuration has no gateway address, or the listener is not bound
    ///   within 10 seconds.
    public func gatewayPort() async throws -> Int {
        guard runtime.configuration.gatewayAddress != nil else {
            throw TestSetupError("the configuration has no gateway address")
        }
        return try await gatewayListening.port()
    }

    /// The base URL, `http://127.0.0.1:PORT`, at which `front` serves the gateway (a live harness for the public
    /// port).
    ///
    /// - Throws: `TestSetupError` when that server is not listening.
    public func gatewayBase(_ front: GatewayFront) async throws -> String {
        switch front {
        case .publicPort:
            guard let port else { throw TestSetupError("the harness is not live") }
            return "http://127.0.0.1:\(port)"
        case .listener:
            return "http://127.0.0.1:\(try await gatewayPort())"
        }
    }

    /// Checks every response this harness saw against `/openapi.json`: a documented status for the operation, and
    /// a body that matches its schema. Every API suite runs through here, so a response the document does not
    /// describe fails the test that produced it.
    ///
    /// - Throws: `TestSetupError` listing the responses that do not conform.
    public func checkContract() throws {
        let contract = try Self.contract()
        var problems: [String] = []
        for entry in seen.entries {
            problems += contract.check(
                method: entry.method.rawValue, path: entry.path, status: Int(entry.response.status.code),
                contentType: entry.response.headers[.contentType], body: entry.response.body)
        }
        if !problems.isEmpty {
            throw TestSetupError(
                "responses that do not follow openapi.json:\n" + problems.prefix(20).joined(separator: "\n"))
        }
    }

    static func contract() throws -> OpenAPIContract {
        if let loaded = loadedContract { return loaded }
        throw TestSetupError("openapi.json could not be loaded")
    }

    private static let loadedContract = try? OpenAPIContract()

    /// Signs up through the API (real bcrypt), returning the session.
    public func signup(email: String? = nil, password: String = Fixtures.password) async throws -> TestUser {
        let address = email ?? "user-\(UUID().uuidString.prefix(8).lowercased())@example.test"
        let response = try await request(.post, "/api/auth/signup", json: ["email": address, "password": password])
        guard response.status == .created else {
            throw TestSetupError("sign-up failed: \(response.status) \(response.text)")
        }
        return try session(from: response, email: address)
    }

    /// A user with a session, made directly in the stores (no bcrypt work).
    public func user(email: String? = nil) async throws -> TestUser {
        let address = email ?? "user-\(UUID().uuidString.prefix(8).lowercased())@example.test"
        let user = try await runtime.users.create(email: address, passwordHash: Self.passwordHash, audit: nil)
        let (token, session) = try await runtime.sessions.create(userID: user.id, lifetime: .seconds(3600))
        return TestUser(id: user.id, email: address, cookie: token, csrf: session.csrfToken)
    }

    func session(from response: APIResponse, email: String) throws -> TestUser {
        guard let setCookie = response.headers[.setCookie], let value = setCookie.split(separator: ";").first,
            let token = value.split(separator: "=", maxSplits: 1).last,
            let csrf = response.json["csrf_token"] as? String,
            let idText = (response.json["user"] as? [String: Any])?["id"] as? String, let id = UUID(uuidString: idText)
        else { throw TestSetupError("no session in the response") }
        return TestUser(id: id, email: email, cookie: String(token), csrf: csrf)
    }

    /// Creates a personal access token through the API.
    public func personalToken(for user: TestUser, scopes: [String]) async throws -> (id: String, token: String) {
        let response = try await request(
            .post, "/api/tokens", auth: user.session, json: ["name": "test token", "scopes": scopes])
        guard response.status == .created, let secret = response.json["secret"] as? String,
            let id = (response.json["token"] as? [String: Any])?["id"] as? String
        else { throw TestSetupError("token creation failed: \(response.text)") }
        return (id, secret)
    }

    /// Creates a service token as the operator would.
    public func serviceToken(scopes: Set<TokenScope> = [.credentialsRead]) async throws -> (id: UUID, token: String) {
        let (token, record) = try await runtime.tokens.create(
            kind: .service, userID: nil, name: "backend", scopes: scopes, expiresAt: nil,
            audit: AuditEntry(actor: .operator, action: .tokenCreate))
        return (record.id, token)
    }

    /// Polls the integration until its status is no longer `verifying` (or 60 s pass: under a full parallel run the
    /// worker checks many integrations), and returns it.
    public func settled(_ id: String, auth: TestAuth) async throws -> [String: Any] {
        for _ in 0..<1_200 {
            let json = try await request(.get, "/api/integrations/\(id)", auth: auth).json
            if json["status"] as? String != "verifying" { return json }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await request(.get, "/api/integrations/\(id)", auth: auth).json
    }

    /// Creates an OpenAI integration through the API and returns its id.
    public func openAIIntegration(for auth: TestAuth, name: String? = nil, key: String? = nil) async throws -> String {
        let response = try await request(
            .post, "/api/integrations", auth: auth,
            json: [
                "name": name ?? "openai \(UUID().uuidString.prefix(6))", "type": "openai",
                "credentials": key ?? "sk-test-\(UUID().uuidString.replacingOccurrences(of: "-", with: ""))",
            ])
        guard response.status == .created, let id = response.json["id"] as? String else {
            throw TestSetupError("integration creation failed: \(response.status) \(response.text)")
        }
        return id
    }
}

/// Which of the gateway's two servers a test calls: `/gateway` on the public port (the router), or on its own
/// listener (`KEYHAVEN_GATEWAY_ADDRESS`). The gateway's suites run against both, so the two cannot drift.
public enum GatewayFront: String, Sendable, CaseIterable, CustomStringConvertible {
    case publicPort = "public port"
    case listener = "gateway listener"

    public var description: String { rawValue }

    /// Sets `configuration` up for this front: the listener on a free loopback port.
    public func configure(_ configuration: inout KeyhavenConfiguration) {
        if self == .listener { configuration.gatewayAddress = .init(host: "127.0.0.1", port: 0) }
    }
}

/// A port a server reports once it is bound, waited for by the tests.
final class ListeningPort: Sendable {
    private let value = Mutex<Int?>(nil)

    func bound(_ port: Int?) {
        value.withLock { $0 = port }
    }

    /// The port, once bound.
    ///
    /// - Throws: `TestSetupError` after 10 seconds without one.
    func port() async throws -> Int {
        for _ in 0..<1_000 {
            if let port = value.withLock({ $0 }) { return port }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestSetupError("the gateway's listener was not bound within 10 seconds")
    }
}

/// Every response an `APIHarness` saw.
public final class ResponseLog: Sendable {
    private let log = Mutex<[(method: HTTPRequest.Method, path: String, response: APIResponse)]>([])
    private let limit: Int

    /// A log that keeps the first `limit` responses.
    public init(limit: Int = .max) {
        self.limit = limit
    }

    func append(method: HTTPRequest.Method, path: String, response: APIResponse) {
        log.withLock { if $0.count < limit { $0.append((method, path, response)) } }
    }

    /// The responses, with the path each answered.
    public var all: [(path: String, response: APIResponse)] { log.withLock { $0.map { ($0.path, $0.response) } } }

    /// The responses, with the request's method and path.
    public var entries: [(method: HTTPRequest.Method, path: String, response: APIResponse)] { log.withLock { $0 } }
}

extension TemporaryDirectory {
    /// The SQLite database a server in this folder uses.
    public var databasePath: String { path + "/keyhaven.sqlite" }
    /// Its keyring file.
    public var keyringPath: String { path + "/keyring.json" }

    /// What `keyhaven serve` needs to serve this folder's database and keyring on a free loopback port.
    public var serveEnvironment: [String: String] {
        [
            "KEYHAVEN_DATABASE_URL": "sqlite://\(databasePath)", "KEYHAVEN_KEYRING_FILE": keyringPath,
            "KEYHAVEN_HOST": "127.0.0.1", "KEYHAVEN_PORT": "0",
        ]
    }

    /// Opens this folder's database with the library (making the keyring file the first time), to seed it before a
    /// server is started on it; shut it down first.
    public func openRuntime() async throws -> KeyhavenRuntime {
        try await KeyhavenRuntime.open(
            KeyhavenConfiguration(
                database: .sqlite(path: databasePath), keyring: KeyringSource(file: KeyringFile(path: keyringPath))),
            allowKeyringCreation: true, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }
}
