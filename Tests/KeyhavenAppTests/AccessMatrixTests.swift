import Foundation
import HTTPTypes
import JWTKit
import KeyhavenApp
import KeyhavenCore
import KeyhavenTestSupport
import Testing

/// The issuer and audience test JWTs carry.
let testJWTIssuer = "https://auth.example.test"
let testJWTAudience = "authenticated"

/// JWT settings for `secret` with the test issuer and audience.
func testJWTSettings(_ secret: String) -> KeyhavenConfiguration.JWTSettings {
    .init(secret: secret, issuer: testJWTIssuer, audience: testJWTAudience)
}

/// Signs an HS256 JWT for tests, with the test issuer and audience.
func jwt(secret: String, subject: String, expiresIn: TimeInterval, notBefore: Date? = nil) async throws -> String {
    struct Payload: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim
        var aud: AudienceClaim
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }
    let keys = JWTKeyCollection()
    await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
    return try await keys.sign(
        Payload(
            sub: .init(value: subject), exp: .init(value: Date().addingTimeInterval(expiresIn)),
            nbf: notBefore.map { .init(value: $0) },
            iss: .init(value: testJWTIssuer), aud: .init(value: [testJWTAudience])))
}

@Suite("Access control")
struct AccessMatrixTests {
    static let jwtSecret = "test-jwt-secret-that-is-long-enough-0123456789"

    enum Caller: String, CaseIterable, CustomStringConvertible {
        case anonymous, session, sessionWithoutCSRF, patRead, patReadWrite, service, revokedToken, expiredJWT,
            wrongSecretJWT, jwt
        var description: String { rawValue }
    }

    enum Route: String, CaseIterable {
        case me = "GET /api/auth/me"
        case logout = "POST /api/auth/logout"
        case listTokens = "GET /api/tokens"
        case createToken = "POST /api/tokens"
        case revokeToken = "DELETE /api/tokens/{id}"
        case listIntegrations = "GET /api/integrations"
        case createIntegration = "POST /api/integrations"
        case getIntegration = "GET /api/integrations/{id}"
        case putIntegration = "PUT /api/integrations/{id}"
        case patchIntegration = "PATCH /api/integrations/{id}"
        case deleteIntegration = "DELETE /api/integrations/{id}"
        case credentials = "GET /api/integrations/{id}/credentials"
        case test = "POST /api/integrations/{id}/test"
        case audit = "GET /api/audit"
    }

    /// The expected status of every route for every caller.
    static let expected: [Route: [Caller: Int]] = {
        var table: [Route: [Caller: Int]] = [:]
        let everyone401: [Caller: Int] = [.anonymous: 401, .revokedToken: 401, .expiredJWT: 401, .wrongSecretJWT: 401]
        func row(_ values: [Caller: Int]) -> [Caller: Int] { everyone401.merging(values) { $1 } }
        table[.me] = row([
            .session: 200, .sessionWithoutCSRF: 200, .patRead: 200, .patReadWrite: 200, .service: 403, .jwt: 200,
        ])
        table[.logout] = row([
            .session: 204, .sessionWithoutCSRF: 403, .patRead: 403, .patReadWrite: 403, .service: 403, .jwt: 403,
        ])
        table[.listTokens] = row([
            .session: 200, .sessionWithoutCSRF: 200, .patRead: 403, .patReadWrite: 403, .service: 403, .jwt: 200,
        ])
        table[.createToken] = row([
            .session: 201, .sessionWithoutCSRF: 403, .patRead: 403, .patReadWrite: 403, .service: 403, .jwt: 201,
        ])
        table[.revokeToken] = row([
            .session: 204, .sessionWithoutCSRF: 403, .patRead: 403, .patReadWrite: 403, .service: 403, .jwt: 204,
        ])
        table[.listIntegrations] = row([
            .session: 200, .sessionWithoutCSRF: 200, .patRead: 200, .patReadWrite: 200, .service: 403, .jwt: 200,
        ])
        table[.createIntegration] = row([
            .session: 201, .sessionWithoutCSRF: 403, .patRead: 403, .patReadWrite: 201, .service: 403, .jwt: 201,
        ])
        table[.getIntegration] = row([
            .session: 200, .sessionWithoutCSRF: 200, .patRead: 200, .patReadWrite: 200, .service: 403, .jwt: 200,
        ])
        table[.putIntegration] = row([
            .session: 200, .sessionWithoutCSRF: 403, .patRead: 403, .patReadWrite: 200, .service: 403, .jwt: 200,
        ])
        table[.patchIntegration] = table[.putIntegration]
        table[.deleteIntegration] = row([
            .session: 204, .sessionWithoutCSRF: 403, .patRead: 403, .patReadWrite: 204, .service: 403, .jwt: 204,
        ])
        table[.credentials] = row([
            .session: 403, .sessionWithoutCSRF: 403, .patRead: 403, .patReadWrite: 403, .service: 200, .jwt: 403,
        ])
        table[.test] = row([
            .session: 200, .sessionWithoutCSRF: 403, .patRead: 403, .patReadWrite: 200, .service: 403, .jwt: 200,
        ])
        table[.audit] = row([
            .session: 200, .sessionWithoutCSRF: 200, .patRead: 200, .patReadWrite: 200, .service: 403, .jwt: 200,
        ])
        return table
    }()

    @Test("every route answers every kind of caller as the access table says", arguments: TestDatabase.all)
    func matrix(kind: TestDatabase) async throws {
        try await APIHarness.with(kind, configure: { $0.jwt = testJWTSettings(Self.jwtSecret) }) { api in
            var failures: [String] = []
            for route in Route.allCases {
                for caller in Caller.allCases {
                    // Fresh users and objects for every cell, so a DELETE or a logout cannot affect the next one.
                    let owner = try await api.user()
                    let jwtSubject = "external-\(UUID())"
                    let auth: TestAuth
                    switch caller {
                    case .anonymous: auth = .anonymous
                    case .session: auth = owner.session
                    case .sessionWithoutCSRF: auth = .sessionWithoutCSRF(cookie: owner.cookie)
                    case .patRead:
                        auth = .bearer(try await api.personalToken(for: owner, scopes: ["integrations:read"]).token)
                    case .patReadWrite:
                        auth = .bearer(
                            try await api.personalToken(
                                for: owner, scopes: ["integrations:read", "integrations:write"]
                            ).token)
                    case .service: auth = .bearer(try await api.serviceToken().token)
                    case .revokedToken:
                        let token = try await api.personalToken(
                            for: owner, scopes: ["integrations:read", "integrations:write"])
                        _ = try await api.request(.delete, "/api/tokens/\(token.id)", auth: owner.session)
                        auth = .bearer(token.token)
                    case .expiredJWT:
                        auth = .bearer(try await jwt(secret: Self.jwtSecret, subject: jwtSubject, expiresIn: -60))
                    case .wrongSecretJWT:
                        auth = .bearer(
                            try await jwt(
                                secret: "another-secret-that-is-long-enough-9876543210", subject: jwtSubject,
                                expiresIn: 600))
                    case .jwt:
                        auth = .bearer(try await jwt(secret: Self.jwtSecret, subject: jwtSubject, expiresIn: 600))
                    }
                    // The objects a route acts on belong to the caller (the JWT user is created on first sight).
                    var objectOwner = owner
                    if caller == .jwt {
                        let me = try await api.request(.get, "/api/auth/me", auth: auth)
                        let id = try #require(
                            UUID(uuidString: (me.json["user"] as? [String: Any])?["id"] as? String ?? ""))
                        let (cookie, session) = try await api.runtime.sessions.create(
                            userID: id, lifetime: .seconds(600))
                        objectOwner = TestUser(id: id, email: "", cookie: cookie, csrf: session.csrfToken)
                    }
                    let integration = try await api.openAIIntegration(for: objectOwner.session)
                    let token = try await api.personalToken(for: objectOwner, scopes: ["integrations:read"])
                    let status = try await send(route, api: api, auth: auth, integration: integration, token: token.id)
                        .status.code
                    let want = Self.expected[route]![caller]!
                    if status != want { failures.append("\(route.rawValue) as \(caller): \(status), expected \(want)") }
                }
            }
            #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        }
    }

    func send(_ route: Route, api: APIHarness, auth: TestAuth, integration: String, token: String) async throws
        -> APIResponse
    {
        switch route {
        case .me: try await api.request(.get, "/api/auth/me", auth: auth)
        case .logout: try await api.request(.post, "/api/auth/logout", auth: auth)
        case .listTokens: try await api.request(.get, "/api/tokens", auth: auth)
        case .createToken:
            try await api.request(
                .post, "/api/tokens", auth: auth, json: ["name": "t", "scopes": ["integrations:read"]])
        case .revokeToken: try await api.request(.delete, "/api/tokens/\(token)", auth: auth)
        case .listIntegrations: try await api.request(.get, "/api/integrations", auth: auth)
        case .createIntegration:
            try await api.request(
                .post, "/api/integrations", auth: auth,
                json: [
                    "name": "new \(UUID())", "type": "anthropic",
                    "credentials": "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
                ])
        case .getIntegration: try await api.request(.get, "/api/integrations/\(integration)", auth: auth)
        case .putIntegration:
            try await api.request(
                .put, "/api/integrations/\(integration)", auth: auth, json: ["name": "renamed \(UUID())"])
        case .patchIntegration:
            try await api.request(.patch, "/api/integrations/\(integration)", auth: auth, json: ["enabled": false])
        case .deleteIntegration: try await api.request(.delete, "/api/integrations/\(integration)", auth: auth)
        case .credentials: try await api.request(.get, "/api/integrations/\(integration)/credentials", auth: auth)
        case .audit: try await api.request(.get, "/api/audit", auth: auth)
        case .test: try await api.request(.post, "/api/integrations/\(integration)/test", auth: auth)
        }
    }
}
