import Foundation
import JWTKit
import KeyhavenApp
import KeyhavenClient
import KeyhavenTestSupport
import SQLKit
import Testing

/// `KeyhavenClient` against a live server on a real socket, with the fake providers behind it.
@Suite("the Swift client against a live server")
struct ClientTests {
    static let jwtSecret = "client-tests-jwt-secret-long-enough-0123456789"

    /// Runs `body` with a live server whose providers are the fakes, and a user holding a read-write PAT.
    func withServer(
        checks: Int = 1000, _ body: @Sendable (APIHarness, FakeProviders, URL, TestUser, String) async throws -> Void
    ) async throws {
        let fakes = try await FakeProviders.start()
        do {
            try await APIHarness.with(
                .sqlite, live: true,
                configure: { configuration in
                    configuration.providerEndpoints = fakes.endpoints()
                    configuration.checkRateLimit = .init(perUser: checks)
                    configuration.jwt = .init(
                        secret: Self.jwtSecret, issuer: "https://auth.example.test", audience: "authenticated")
                }
            ) { api in
                guard let port = api.port, let url = URL(string: "http://127.0.0.1:\(port)") else {
                    throw TestSetupError("the live server has no port")
                }
                let user = try await api.user()
                let pat = try await api.personalToken(for: user, scopes: ["integrations:read", "integrations:write"])
                try await body(api, fakes, url, user, pat.token)
            }
        } catch {
            await fakes.stop()
            throw error
        }
        await fakes.stop()
        #expect(fakes.unexpected == [])
    }

    /// Good credentials of every type, as the fakes accept them.
    static func everyType(_ fakes: FakeProviders) -> [Credentials] {
        [
            .openAI(apiKey: FakeProviders.openAIKey, organization: "org-fake", project: "proj_client"),
            .googleCloud(ServiceAccount(fields: fakes.googleAccount.compactMapValues { $0.stringValue })),
            .aws(
                AWSCredentials(
                    accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret,
                    region: "us-east-1")),
            .azure(
                AzureServicePrincipal(
                    tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient,
                    clientSecret: FakeProviders.azureSecret)),
            .anthropic(apiKey: FakeProviders.anthropicKey),
            .gemini(apiKey: FakeProviders.geminiKey),
            .azureOpenAI(apiKey: FakeProviders.azureOpenAIKey, resource: FakeProviders.azureOpenAIResource),
            .vertexAI(
                ServiceAccount(fields: fakes.googleAccount.compactMapValues { $0.stringValue }),
                project: FakeProviders.vertexProject, region: "europe-west4"),
        ]
            + FakeProviders.catalogProviders.map { .apiKey(provider: IntegrationType(rawValue: $0.id), key: $0.key) }
    }

    @Test("every operation round-trips for every integration type, and credentials come back typed and redacted")
    func roundTrip() async throws {
        try await withServer { api, fakes, url, _, pat in
            let client = KeyhavenClient(baseURL: url, token: pat)
            let service = try await api.serviceToken()
            let backend = KeyhavenClient(baseURL: url, token: service.token)
            for credentials in Self.everyType(fakes) {
                let type = credentials.type
                let new = NewIntegration(name: "client \(type.rawValue)", credentials: credentials)
                let created = try await client.createIntegration(new)
                #expect(created.type == type)
                #expect(created.status == .verifying)
                #expect(created.credentialVersion == 1)

                let fetched = try await client.integration(created.id)
                #expect(fetched.id == created.id)
                let page = try await client.integrations(limit: 200)
                #expect(page.integrations.contains { $0.id == created.id })

                let result = try await client.testIntegration(created.id)
                #expect(result.status == .connected, "\(type.rawValue): \(result.outcome)")
                #expect(result.outcome == "connected")

                let renamed = try await client.updateIntegration(
                    created.id, IntegrationUpdate(name: "renamed \(type.rawValue)"))
                #expect(renamed.name == "renamed \(type.rawValue)")
                #expect(renamed.credentialVersion == 1)
                let rotated = try await client.updateIntegration(
                    created.id, IntegrationUpdate(credentials: credentials))
                #expect(rotated.credentialVersion == 2)
                #expect(rotated.status == .verifying)

                let read = try await backend.credentials(for: created.id)
                #expect(read.integrationID == created.id)
                #expect(read.credentialVersion == 2)
                #expect(read.credentials == credentials, "\(type.rawValue) came back different")
                #expect("\(read.credentials)" == "<redacted>")
                #expect(String(reflecting: read.credentials) == "<redacted>")
                for secret in Self.secrets(of: credentials) {
                    #expect(!"\(read)".contains(secret))
                    var dumped = ""
                    dump(read.credentials, to: &dumped)
                    #expect(!dumped.contains(secret))
                }

                let events = try await client.auditEvents(integrationID: created.id, limit: 50)
                let actions = Set(events.events.map(\.action))
                #expect(actions.isSuperset(of: ["integration.create", "integration.test", "credentials.read"]))

                let disabled = try await client.updateIntegration(created.id, IntegrationUpdate(enabled: false))
                #expect(disabled.status == .disabled)
                try await client.deleteIntegration(created.id)
                await #expect(throws: KeyhavenClientError.notFound) { try await client.integration(created.id) }
            }
            // Paging: a cursor leads to the next page.
            for index in 0..<3 {
                _ = try await client.createIntegration(
                    NewIntegration(
                        name: "page \(index)", credentials: .anthropic(apiKey: FakeProviders.anthropicKey)))
            }
            let first = try await client.integrations(limit: 2)
            #expect(first.integrations.count == 2)
            let cursor = try #require(first.nextCursor)
            let second = try await client.integrations(limit: 2, cursor: cursor)
            #expect(second.integrations.count == 1)
            #expect(second.nextCursor == nil)
            let audit = try await client.auditEvents(limit: 1)
            let auditCursor = try #require(audit.nextCursor)
            let older = try await client.auditEvents(limit: 1, cursor: auditCursor)
            #expect(older.events.first?.seq ?? 0 < audit.events[0].seq)
        }
    }

    @Test("templates: saved, listed, replaced and deleted; a bad one comes back as a typed validation error")
    func templates() async throws {
        try await withServer { _, _, url, _, pat in
            let client = KeyhavenClient(baseURL: url, token: pat)
            let new = NewTemplate(
                name: "Mistral team", type: .mistral, namePattern: "Mistral {n}",
                rotation: ["mode": .string("remind"), "every_days": .number(30)],
                limits: ["monthly_budget_usd": .number(20)], allowedEndpoints: ["/v1/chat/completions"])
            let saved = try await client.createTemplate(new)
            #expect(saved.type == .mistral && saved.namePattern == "Mistral {n}")
            #expect(saved.limits?["monthly_budget_usd"] == .number(20))
            #expect(try await client.templates().map(\.id) == [saved.id])
            var changed = new
            changed.name = "Mistral staging"
            changed.limits = nil
            let replaced = try await client.replaceTemplate(saved.id, with: changed)
            #expect(replaced.name == "Mistral staging" && replaced.limits == nil)
            var bad = new
            bad.allowedEndpoints = ["/v1/../x"]
            await #expect {
                _ = try await client.createTemplate(bad)
            } throws: { error in
                if case .validation(let fields, _) = error as? KeyhavenClientError {
                    return fields["allowed_endpoints[0]"] != nil
                }
                return false
            }
            try await client.deleteTemplate(saved.id)
            #expect(try await client.templates().isEmpty)
        }
    }

    @Test("an external JWT works like a personal token for the integration calls")
    func externalJWT() async throws {
        try await withServer { _, _, url, _, _ in
            let token = try await Self.jwt(subject: "client-\(UUID())")
            let client = KeyhavenClient(baseURL: url, token: token)
            #expect(try await client.integrations().integrations.isEmpty)
            let created = try await client.createIntegration(
                NewIntegration(
                    name: "jwt", credentials: .gemini(apiKey: FakeProviders.geminiKey)))
            #expect(try await client.integration(created.id).name == "jwt")
            #expect(try await client.testIntegration(created.id).status == .connected)
            try await client.deleteIntegration(created.id)
        }
    }

    @Test("every error comes back typed: unauthenticated, forbidden, not found, validation, conflict, unavailable")
    func typedErrors() async throws {
        try await withServer { api, _, url, user, pat in
            let client = KeyhavenClient(baseURL: url, token: pat)
            let key = "sk-client-typed-errors-000000"
            let created = try await client.createIntegration(
                NewIntegration(name: "errors", credentials: .openAI(apiKey: key)))

            let stranger = KeyhavenClient(baseURL: url, token: "kh_pat_not-a-real-token")
            await #expect(throws: KeyhavenClientError.unauthenticated) { try await stranger.integrations() }
            await #expect(throws: KeyhavenClientError.unauthenticated) {
                try await stranger.credentials(for: created.id)
            }

            let readOnly = try await api.personalToken(for: user, scopes: ["integrations:read"])
            let reader = KeyhavenClient(baseURL: url, token: readOnly.token)
            await #expect { try await reader.deleteIntegration(created.id) } throws: { Self.isForbidden($0) }
            await #expect { try await client.credentials(for: created.id) } throws: { Self.isForbidden($0) }

            await #expect(throws: KeyhavenClientError.notFound) { try await client.integration(UUID()) }
            await #expect(throws: KeyhavenClientError.notFound) { try await client.testIntegration(UUID()) }
            await #expect(throws: KeyhavenClientError.notFound) {
                try await client.updateIntegration(UUID(), IntegrationUpdate(name: "x"))
            }
            await #expect(throws: KeyhavenClientError.notFound) { try await client.deleteIntegration(UUID()) }

            await #expect {
                try await client.createIntegration(NewIntegration(name: " ", credentials: .openAI(apiKey: "not-a-key")))
            } throws: { error in
                guard case .validation(let fields, _) = error as? KeyhavenClientError else { return false }
                return Set(fields.keys) == ["name", "credentials"]
            }
            await #expect {
                try await client.createIntegration(
                    NewIntegration(
                        name: "aws bad",
                        credentials: .aws(AWSCredentials(accessKeyID: "AKIA", secretAccessKey: "short"))))
            } throws: { error in
                guard case .validation(let fields, _) = error as? KeyhavenClientError else { return false }
                return fields["credentials.access_key_id"] != nil && fields["credentials.secret_access_key"] != nil
            }
            await #expect {
                try await client.createIntegration(NewIntegration(name: "errors", credentials: .openAI(apiKey: key)))
            } throws: { error in
                guard case .conflict(let code, _) = error as? KeyhavenClientError else { return false }
                return code == "conflict"
            }

            let service = try await api.serviceToken()
            let backend = KeyhavenClient(baseURL: url, token: service.token)
            _ = try await client.updateIntegration(created.id, IntegrationUpdate(enabled: false))
            await #expect {
                try await backend.credentials(for: created.id)
            } throws: { error in
                guard case .conflict(let code, _) = error as? KeyhavenClientError else { return false }
                return code == "integration_disabled"
            }
            _ = try await client.updateIntegration(created.id, IntegrationUpdate(enabled: true))
            await #expect(throws: KeyhavenClientError.notFound) { try await backend.credentials(for: UUID()) }

            try await api.handle.database.transaction { sql in
                try await sql.raw("ALTER TABLE audit_events RENAME TO audit_events_gone").run()
            }
            await #expect {
                try await backend.credentials(for: created.id)
            } throws: { error in
                guard case .unavailable = error as? KeyhavenClientError else { return false }
                return true
            }
            try await api.handle.database.transaction { sql in
                try await sql.raw("ALTER TABLE audit_events_gone RENAME TO audit_events").run()
            }
            for text in api.logs.all where text.contains(key) { Issue.record("the key reached a log line") }
        }
    }

    @Test("a rate limit comes back typed, with the server's retry delay")
    func rateLimited() async throws {
        try await withServer(checks: 1) { _, _, url, _, pat in
            let client = KeyhavenClient(baseURL: url, token: pat)
            let created = try await client.createIntegration(
                NewIntegration(
                    name: "limited", credentials: .anthropic(apiKey: FakeProviders.anthropicKey)))
            await #expect {
                try await client.testIntegration(created.id)
            } throws: { error in
                guard case .rateLimited(let delay) = error as? KeyhavenClientError else { return false }
                return delay > .zero && delay <= .seconds(600)
            }
        }
    }

    @Test("an unreachable server is a transport error that does not quote the token")
    func unreachable() async throws {
        let url = try FakeProviders.closedPortURL()
        let token = "kh_pat_unreachable-secret-token"
        let client = KeyhavenClient(baseURL: url, token: token, timeout: .seconds(5))
        await #expect {
            try await client.integrations()
        } throws: { error in
            guard case .transport = error as? KeyhavenClientError else { return false }
            return !"\(error)".contains(token)
        }
    }

    static func isForbidden(_ error: any Error) -> Bool {
        if case .forbidden = error as? KeyhavenClientError { true } else { false }
    }

    static func secrets(of credentials: Credentials) -> [String] {
        switch credentials {
        case .openAI(let key, _, _), .anthropic(let key), .gemini(let key), .apiKey(_, let key),
            .azureOpenAI(let key, _, _), .openAICompatible(let key, _):
            [key]
        case .googleCloud(let account), .vertexAI(let account, _, _): [account.privateKey ?? ""]
        case .aws(let keys): [keys.secretAccessKey]
        case .azure(let principal): [principal.clientSecret]
        }
    }

    static func jwt(subject: String) async throws -> String {
        struct Payload: JWTPayload {
            var sub: SubjectClaim
            var exp: ExpirationClaim
            var iss: IssuerClaim
            var aud: AudienceClaim
            func verify(using algorithm: some JWTAlgorithm) async throws {}
        }
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: jwtSecret), digestAlgorithm: .sha256)
        return try await keys.sign(
            Payload(
                sub: .init(value: subject), exp: .init(value: Date().addingTimeInterval(600)),
                iss: .init(value: "https://auth.example.test"), aud: .init(value: ["authenticated"])))
    }
}
