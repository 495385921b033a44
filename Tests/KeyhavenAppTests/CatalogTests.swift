import AsyncHTTPClient
import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenTestSupport
import Logging
import NIOCore
import NIOHTTP1
import Testing

/// The provider catalog as data (SPEC §16): the shipped file against its schema, the rules a schema cannot state,
/// `GET /api/catalog`, and a provider added by an operator's file alone.
@Suite("Provider catalog")
struct CatalogTests {
    static func resource(_ name: String) throws -> JSONValue {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/KeyhavenCore/Resources/\(name)")
        return try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: url))
    }

    static func problems(_ catalog: JSONValue) throws -> [String] {
        let schema = try resource("providers.schema.json")
        var problems: [String] = []
        OpenAPIContract(document: schema).validate(catalog, against: schema, at: "$", into: &problems)
        return problems
    }

    @Test("the shipped catalog follows its JSON Schema, loads, and names every provider the gateway prices")
    func shipped() throws {
        let catalog = try Self.resource("providers.json")
        let problems = try Self.problems(catalog)
        #expect(problems.isEmpty, "\(problems)")
        let loaded = try ProviderCatalog.builtIn()
        let ids = loaded.providers.map(\.id)
        for id in [
            "openai", "anthropic", "gemini", "mistral", "groq", "deepseek", "xai", "openrouter", "together",
            "fireworks",
            "perplexity", "google_cloud", "aws", "azure",
        ] {
            #expect(ids.contains(id), "\(id)")
        }
        // The schema is strict: an unknown field, a bad id or an http base URL is a problem it reports.
        guard case .object(var file) = catalog, case .array(var providers)? = file["providers"],
            case .object(let first) = providers[0]
        else { throw TestSetupError("unexpected catalog shape") }
        for (key, value) in [("colour", JSONValue.string("red")), ("id", "Open AI"), ("base_url", "http://x.example")] {
            var changed = first
            changed[key] = value
            providers[0] = .object(changed)
            file["providers"] = .array(providers)
            #expect(try !Self.problems(.object(file)).isEmpty, "\(key)")
        }
        #expect(Set(ids).count == ids.count)
    }

    @Test("the OpenAPI document names exactly the shipped catalog's providers as integration types")
    func documented() throws {
        let schemas = try OpenAPIContract().document["components"]?["schemas"]
        let listed = schemas?["IntegrationType"]?["examples"]?.arrayValue?.compactMap(\.stringValue)
        let catalog = try ProviderCatalog.builtIn().providers
        #expect(listed == catalog.map(\.id))
        // Every provider has its create shape, except the custom endpoint, whose base URL only the operator's
        // setting makes valid.
        let mapping = schemas?["CreateIntegration"]?["discriminator"]?["mapping"]?.objectValue ?? [:]
        #expect(Set(mapping.keys) == Set(catalog.map(\.id)).subtracting(["openai_compatible"]))
        let templates = schemas?["PutTemplate"]?["discriminator"]?["mapping"]?.objectValue ?? [:]
        #expect(Set(templates.keys) == Set(mapping.keys))
    }

    @Test("a catalog file that breaks a rule is refused with the entry and the reason, and nothing is added")
    func refused() throws {
        func refusal(_ text: String) -> String? {
            do {
                _ = try ProviderCatalog.builtIn().adding(ProviderCatalog.parse(Data(text.utf8)))
                return nil
            } catch let invalid as ProviderCatalog.Invalid {
                return invalid.description
            } catch {
                return "\(error)"
            }
        }
        let good = FakeProviders.extraCatalogEntry
        #expect(refusal(good) == nil)
        let cases: [(String, String, String)] = [
            ("\"id\": \"acme_llm\"", "\"id\": \"openai\"", "defined twice"),
            ("\"https://api.acme-llm.example\"", "\"https://elsewhere.example\"", "allowed_hosts"),
            ("\"min_length\": 30", "\"min_length\": 3", "lengths"),
            ("\"path\": \"/v1/models\"", "\"path\": \"/v1/../models\"", "verify"),
            ("\"/v1/chat/completions\"", "\"/v1//chat\"", "not valid"),
            ("\"version\": 1", "\"version\": 2", "version"),
            ("\"auth\": {\"header\": \"Authorization\", \"scheme\": \"Bearer\"},", "", "auth.header"),
            ("\"group\": \"ai\"", "\"group\": \"models\"", "group"),
        ]
        for (from, to, reason) in cases {
            let text = good.replacingOccurrences(of: from, with: to)
            #expect(text != good, "\(from)")
            let why = refusal(text)
            #expect(why?.contains(reason) == true, "\(to): \(why ?? "accepted")")
        }
        #expect(refusal("not json")?.isEmpty == false)
        #expect(refusal("{\"version\": 1, \"providers\": [{}]}")?.contains("missing") == true)
    }

    @Test("gateway path rules: literal segments, one of several names, and a segment's start before a suffix")
    func patterns() throws {
        let gemini = try PathPattern("/{v1,v1beta}/{models,tunedModels}/*:generateContent")
        #expect(gemini.matches("/v1beta/models/gemini-2.5-flash:generateContent"))
        #expect(gemini.matches("/v1/tunedModels/mine:generateContent"))
        #expect(!gemini.matches("/v1beta/models/gemini:batchGenerateContent"))
        #expect(!gemini.matches("/v1beta/models/a:b:generateContent"))
        #expect(!gemini.matches("/v2/models/gemini:generateContent"))
        #expect(!gemini.matches("/v1beta/models/:generateContent"))
        #expect(!gemini.matches("/v1beta/models/gemini:generateContent/extra"))
        let plain = try PathPattern("/v1/chat/completions")
        #expect(plain.matches("/v1/chat/completions") && !plain.matches("/v1/chat/completions/x"))
        for bad in ["v1/x", "/v1//x", "/v1/../x", "/{}/x", "/*%2f", "/a b"] {
            #expect(throws: ProviderCatalog.Invalid.self, "\(bad)") { try PathPattern(bad) }
        }
    }

    @Test("GET /api/catalog serves the catalog to a signed-in caller, with an ETag, and nothing to anyone else")
    func served() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            #expect(try await api.request(.get, "/api/catalog").status == .unauthorized)
            let response = try await api.request(.get, "/api/catalog", auth: user.session)
            #expect(response.status == .ok)
            let providers = response.json["providers"] as? [[String: Any]] ?? []
            #expect(providers.map { $0["id"] as? String } == (try ProviderCatalog.builtIn()).providers.map(\.id))
            let mistral = try #require(providers.first { $0["id"] as? String == "mistral" })
            #expect((mistral["credential"] as? [String: Any])?["kind"] as? String == "api_key")
            #expect((mistral["gateway"] as? [String: Any])?["usage"] as? String == "openai")
            #expect(providers.first { $0["id"] as? String == "aws" }?["automatic_rotation"] as? Bool == true)
            let tag = try #require(response.headers[.eTag])
            let again = try await api.request(
                .get, "/api/catalog", auth: user.session, headers: [.ifNoneMatch: tag])
            #expect(again.status == .notModified)
            try api.checkContract()
        }
    }

    @Test(
        """
        an OpenAI-compatible provider added by KEYHAVEN_CATALOG_EXTRA alone: listed, created, verified against its \
        fake, forwarded and priced by the running binary; a broken extra file stops serve with the reason
        """
    )
    func extraFile() async throws {
        try await Self.withBinaryFolder { fakes, directory, client in
            let extra = directory.path + "/providers-extra.json"
            try Data(FakeProviders.extraCatalogEntry.utf8).write(to: URL(fileURLWithPath: extra))
            // The operator's data, seeded as a first start would leave it: a user with a session, a service token.
            let (cookie, csrf, token) = try await Self.seed(directory)

            let binary = try KeyhavenBinary()
            var environment = directory.serveEnvironment
            environment["KEYHAVEN_CATALOG_EXTRA"] = directory.path + "/missing.json"
            let broken = try binary.start(["serve"], environment: environment, in: directory.path)
            #expect(await broken.wait(timeout: .seconds(20)) != 0)
            #expect(broken.stderr.contains("KEYHAVEN_CATALOG_EXTRA"), "\(broken.stderr.suffix(500))")

            environment["KEYHAVEN_CATALOG_EXTRA"] = extra
            environment["KEYHAVEN_PROVIDER_ACME_LLM_URL"] = fakes.baseURL.absoluteString + "/acme_llm"
            environment["KEYHAVEN_EGRESS_ALLOW_PRIVATE"] = "true"
            let server = try binary.start(["serve"], environment: environment, in: directory.path)
            defer { if server.isRunning { server.signal(SIGKILL) } }
            let port = try #require(await server.listeningPort(), "\(server.stderr)")
            func send(_ method: HTTPMethod, _ path: String, json: [String: Any]? = nil, bearer: String? = nil)
                async throws -> (Int, [String: Any], String)
            {
                try await Self.send(
                    client, port, method, path, cookie: bearer == nil ? (cookie, csrf) : nil,
                    bearer: bearer,
                    json: json)
            }
            let (_, catalog, _) = try await send(.GET, "/api/catalog")
            let ids = (catalog["providers"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
            #expect(ids.last == "acme_llm" && ids.contains("openai"))

            let provider = FakeProviders.extraProvider
            let (created, integration, text) = try await send(
                .POST, "/api/integrations", json: ["name": "acme", "type": "acme_llm", "credentials": provider.key])
            #expect(created == 201, "\(text)")
            let id = try #require(integration["id"] as? String)
            let read = try await Self.settled(client, port, id, cookie: (cookie, csrf))
            #expect(read["status"] as? String == "connected", "\(read)")
            let (forwarded, _, answer) = try await send(
                .POST, "/gateway/\(id)/v1/chat/completions", json: ["model": provider.model, "messages": []],
                bearer: token)
            #expect(forwarded == 200 && answer.contains("\"prompt_tokens\":1000"), "\(answer)")
            var total: [String: Any] = [:]
            for _ in 0..<100 where total["requests"] as? Int != 1 {
                total = try await send(.GET, "/api/usage?integration_id=\(id)").1["total"] as? [String: Any] ?? [:]
                if total["requests"] as? Int != 1 { try await Task.sleep(for: .milliseconds(50)) }
            }
            // mistral-small-latest: 1000 × 0.15 + 500 × 0.6 micro-dollars.
            #expect(total["cost_micros"] as? Int == 450, "\(total)")
            // A type the catalog does not have is refused as before.
            let (unknown, _, _) = try await send(
                .POST, "/api/integrations", json: ["name": "x", "type": "acme_other", "credentials": provider.key])
            #expect(unknown == 422)
            #expect(fakes.unexpected == [])
            #expect(!server.stderr.contains(provider.key))
            server.signal(SIGTERM)
            #expect(await server.wait(timeout: .seconds(20)) == 0)
        }
    }

    @Test(
        """
        a custom OpenAI-compatible endpoint works only on an origin the operator allows \
        (KEYHAVEN_ALLOWED_CUSTOM_HOSTS): verified, forwarded and metered there; any other base URL, or any at all \
        without the setting, is refused with 422 naming config.base_url
        """
    )
    func customEndpoint() async throws {
        try await Self.withBinaryFolder { fakes, directory, client in
            let (cookie, csrf, token) = try await Self.seed(directory)
            let provider = FakeProviders.customProvider
            let endpoint = fakes.baseURL.absoluteString + "/openai_compatible/v1"
            func create(_ base: String, on port: Int) async throws -> (Int, [String: Any], String) {
                try await Self.send(
                    client, port, .POST, "/api/integrations", cookie: (cookie, csrf),
                    json: [
                        "name": "local \(UUID().uuidString.prefix(6))", "type": "openai_compatible",
                        "credentials": provider.key, "config": ["base_url": base],
                    ])
            }

            let binary = try KeyhavenBinary()
            var environment = directory.serveEnvironment
            environment["KEYHAVEN_EGRESS_ALLOW_PRIVATE"] = "true"
            let closed = try binary.start(["serve"], environment: environment, in: directory.path)
            let closedPort = try #require(await closed.listeningPort(), "\(closed.stderr)")
            let (refused, body, _) = try await create(endpoint, on: closedPort)
            #expect(
                refused == 422 && (body["error"] as? [String: Any]).map { "\($0)" }?.contains("config.base_url") == true
            )
            closed.signal(SIGTERM)
            #expect(await closed.wait(timeout: .seconds(20)) == 0)

            environment["KEYHAVEN_ALLOWED_CUSTOM_HOSTS"] = "llm.internal.example, \(fakes.baseURL.absoluteString)"
            let server = try binary.start(["serve"], environment: environment, in: directory.path)
            defer { if server.isRunning { server.signal(SIGKILL) } }
            let port = try #require(await server.listeningPort(), "\(server.stderr)")
            for other in ["http://127.0.0.1:1/v1", "https://evil.example/v1", "ftp://\(fakes.baseURL.host ?? "")/v1"] {
                let (status, _, text) = try await create(other, on: port)
                #expect(status == 422 && text.contains("config.base_url"), "\(other): \(text)")
            }
            let (created, integration, text) = try await create(endpoint, on: port)
            #expect(created == 201, "\(text)")
            let id = try #require(integration["id"] as? String)
            let read = try await Self.settled(client, port, id, cookie: (cookie, csrf))
            #expect(read["status"] as? String == "connected", "\(read)")
            let (forwarded, _, answer) = try await Self.send(
                client, port, .POST, "/gateway/\(id)/chat/completions", bearer: token,
                json: ["model": provider.model, "messages": []])
            #expect(forwarded == 200 && answer.contains("\"prompt_tokens\":1000"), "\(answer)")
            #expect(fakes.modelCalls.last?.path == "/openai_compatible/v1/chat/completions")
            #expect(fakes.unexpected == [])
            server.signal(SIGTERM)
            #expect(await server.wait(timeout: .seconds(20)) == 0)
        }
    }

    /// Runs `body` with the fakes, a folder for a server's data, and an HTTP client; all three are stopped after.
    static func withBinaryFolder(
        _ body: (FakeProviders, TemporaryDirectory, HTTPClient) async throws -> Void
    ) async throws {
        let fakes = try await FakeProviders.start()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try await body(fakes, directory, client)
        } catch {
            try? await client.shutdown()
            await fakes.stop()
            throw error
        }
        try await client.shutdown()
        await fakes.stop()
    }

    /// A user with a session and a `gateway:use` service token in `directory`'s database, as a first start would
    /// leave them: the session cookie, its CSRF token, and the token.
    static func seed(_ directory: TemporaryDirectory) async throws -> (String, String, String) {
        let runtime = try await directory.openRuntime()
        let user = try await runtime.users.create(
            email: "operator@example.test", passwordHash: APIHarness.passwordHash, audit: nil)
        let (cookie, session) = try await runtime.sessions.create(userID: user.id, lifetime: .seconds(3600))
        let (token, _) = try await runtime.tokens.create(
            kind: .service, userID: nil, name: "backend", scopes: [.gatewayUse], expiresAt: nil,
            audit: AuditEntry(actor: .operator, action: .tokenCreate))
        await runtime.shutdown()
        return (cookie, session.csrfToken, token)
    }

    /// The integration `id` of the server on `port` once it is no longer being verified (or 60 s pass).
    static func settled(_ client: HTTPClient, _ port: Int, _ id: String, cookie: (String, String)) async throws
        -> [String: Any]
    {
        var read: [String: Any] = [:]
        for _ in 0..<1_200 where read["status"] as? String ?? "verifying" == "verifying" {
            read = try await send(client, port, .GET, "/api/integrations/\(id)", cookie: cookie).1
            if read["status"] as? String == "verifying" { try await Task.sleep(for: .milliseconds(50)) }
        }
        return read
    }

    /// One request to a server on `port`, as a signed-in browser (`cookie`) or a backend (`bearer`): its status, its
    /// JSON body, and its text.
    static func send(
        _ client: HTTPClient, _ port: Int, _ method: HTTPMethod, _ path: String,
        cookie: (String, String)? = nil, bearer: String? = nil, json: [String: Any]? = nil
    ) async throws -> (Int, [String: Any], String) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if let bearer { request.headers.add(name: "authorization", value: "Bearer \(bearer)") }
        if let (token, csrf) = cookie {
            request.headers.add(name: "cookie", value: "keyhaven_session=\(token)")
            request.headers.add(name: "x-csrf-token", value: csrf)
        }
        if let json {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
        }
        let response = try await client.execute(request, timeout: .seconds(20))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
        let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
        return (Int(response.status.code), object, text)
    }
}
