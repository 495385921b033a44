import Foundation
import HTTPTypes
import Hummingbird
import KeyhavenApp
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenGateway
import KeyhavenProviders
import KeyhavenServices
import KeyhavenStorage
import KeyhavenWeb
import Logging
import NIOHTTP1
import SQLKit

// The pieces ./scripts/bench needs around `keyhaven serve` for the HTTP figures: a bare Hummingbird server to
// compare against, and a database seeded with what the load generator uses.

/// A bare Hummingbird hello-world on 127.0.0.1:`port`, built with the same release settings as Keyhaven.
func runHelloServer(port: Int) async throws {
    let router = Router()
    router.get("/") { _, _ in "Hello" }
    // A fixed body of `n` bytes: the floor under a route that answers as many (a list of 50 integrations).
    router.get("/bytes/:n") { _, context -> Response in
        let count = min(max(context.parameters.get("n").flatMap { Int($0) } ?? 0, 0), 1 << 20)
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(repeating: UInt8(ascii: " "), count: count)))
    }
    let app = Application(
        router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
        logger: Logger(label: "hello", factory: { _ in SwiftLogNoOpLogHandler() }))
    try await app.runService()
}

/// The key the bench's fake provider accepts, stored in the gateway's integration.
let fakeProviderKey = "sk-bench-gateway-" + String(repeating: "g", count: 32)

/// A minimal, fast stand-in for OpenAI on 127.0.0.1:`port`: any POST with the bench's key gets one fixed chat
/// completion with its usage; another key gets 401. Called directly and through the gateway, it shows what the
/// gateway adds.
func runFakeProvider(port: Int) async throws {
    let completion = ByteBuffer(
        string:
            #"{"id":"chatcmpl-bench","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","#
            + #""choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"#
            + #""finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"#
            + #""total_tokens":15,"prompt_tokens_details":{"cached_tokens":0}}}"#
    )
    let expected = "Bearer \(fakeProviderKey)"
    let router = Router()
    router.post("/**") { request, _ -> Response in
        guard request.headers[.authorization] == expected else { return Response(status: .unauthorized) }
        for try await _ in request.body {}
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: completion))
    }
    let app = Application(
        router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
        logger: Logger(label: "fake-provider", factory: { _ in SwiftLogNoOpLogHandler() }))
    try await app.runService()
}

/// The gateway's forwarding alone on 127.0.0.1:`port`: `POST /relay/<path>` goes through Hummingbird and
/// ``Gateway/forward`` to the fake provider on `providerPort` with its key injected, and the answer is passed back
/// as the gateway passes it, with no token, database, limit or usage. What it adds to the direct call is the floor
/// under what the gateway adds.
func runRelay(port: Int, providerPort: Int) async throws {
    let gateway = Gateway(
        endpoints: ProviderEndpoints(overrides: [.openai: URL(string: "http://127.0.0.1:\(providerPort)")!]),
        egress: EgressPolicy(allowPrivate: true), prices: Prices(try PriceTable.bundled()))
    let now = Date()
    let integration = Integration(
        id: UUID(), ownerID: UUID(), name: "relay", type: .openai, status: .connected, enabled: true, config: [:],
        credentialHint: nil, credentialVersion: 1, errorMessage: nil, lastVerifiedAt: nil, lastUsedAt: nil,
        createdAt: now, updatedAt: now)
    let router = Router()
    router.post("/relay/**") { request, _ -> Response in
        let forwarded = Gateway.Request(
            method: .POST, path: String(request.uri.path.dropFirst("/relay".count)), query: nil,
            headers: request.headers.map { ($0.name.rawName, $0.value) },
            contentLength: request.headers[.contentLength].flatMap { Int($0) })
        let upstream = try await gateway.forward(
            forwarded, body: request.body, integration: integration, credentials: .apiKey(fakeProviderKey))
        var headers = HTTPFields()
        for (name, value) in upstream.headers {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        if let (body, _) = await upstream.readWhole() {
            return Response(
                status: .init(code: upstream.status), headers: headers, body: ResponseBody(byteBuffer: body))
        }
        return Response(
            status: .init(code: upstream.status), headers: headers,
            body: ResponseBody(contentLength: upstream.contentLength) { writer in
                _ = await upstream.relay { try await writer.write($0) }
                try await writer.finish(nil)
            })
    }
    let app = Application(
        router: router,
        configuration: .init(address: .hostname("127.0.0.1", port: port)),
        logger: Logger(label: "relay", factory: { _ in SwiftLogNoOpLogHandler() }))
    try await app.runService()
}

/// Seeds `integrations` OpenAI integrations for one user (the first through the store, as the API would; the rest
/// in bulk, each sealed under its own data key and bound to its row) and prints, one `NAME=value` per line, what
/// the load generator needs: an integration id, a service token, a personal token, a session and its CSRF token.
func seedForHTTP(databaseURL: String, masterKey: String, integrations: Int) async throws {
    let configuration = KeyhavenConfiguration(
        database: try DatabaseLocation(url: databaseURL),
        keyring: KeyringSource(environmentKey: try MasterKey(id: "primary", base64: masterKey)))
    let runtime = try await KeyhavenRuntime.open(configuration, allowKeyringCreation: false, logger: logger)
    let user = try await runtime.users.create(
        email: "bench-\(UUID().uuidString.prefix(8).lowercased())@example.test",
        passwordHash: PasswordHasher.hashBlocking("bench password that is long enough"), audit: nil)
    let first = try await runtime.integrations.create(
        ownerID: user.id, name: "bench integration", type: .openai, config: [:],
        credentials: .apiKey("sk-bench-" + String(repeating: "k", count: 40)), actor: .system)
    guard let kek = runtime.keyring.keyring.keys.first else { throw KeyhavenError.keyring("no master key") }
    var remaining = max(0, integrations - 1)
    var counter = 0
    while remaining > 0 {
        let count = min(remaining, 400)
        remaining -= count
        var integrationRows = SQLQueryString(
            """
            INSERT INTO integrations (id, owner_id, name, type, status, enabled, config, credential_hint,
            current_version, latest_version, created_at, updated_at) VALUES\u{20}
            """)
        var secretRows = SQLQueryString(
            """
            INSERT INTO secrets (id, integration_id, owner_id, version, \
            kek_id, wrapped_dek, nonce, ciphertext, created_at) VALUES\u{20}
            """
        )
        let now = Date()
        for index in 0..<count {
            counter += 1
            let id = UUID.timeOrdered()
            let (binding, sealed) = try Envelope.sealNewRow(
                SecretBytes(utf8: "\"sk-bench-\(counter)-" + String(repeating: "k", count: 32) + "\""),
                integrationID: id,
                ownerID: user.id, version: 1, kek: kek)
            let separator = index == 0 ? "(" : ", ("
            integrationRows.appendInterpolation(unsafeRaw: separator)
            integrationRows.appendInterpolation(binds: [
                id, user.id, "bench \(counter)", "openai", "connected", true, "{}", "sk-…kkkk", 1, 1, now, now,
            ])
            integrationRows.appendInterpolation(unsafeRaw: ")")
            secretRows.appendInterpolation(unsafeRaw: separator)
            secretRows.appendInterpolation(binds: [
                binding.secretID, id, user.id, 1, sealed.kekID, sealed.wrappedDEK, sealed.nonce, sealed.ciphertext, now,
            ])
            secretRows.appendInterpolation(unsafeRaw: ")")
        }
        let (integrationInsert, secretInsert) = (integrationRows, secretRows)
        try await runtime.database.transaction { sql in
            try await sql.raw(integrationInsert).run()
            try await sql.raw(secretInsert).run()
        }
    }
    let (service, _) = try await runtime.tokens.create(
        kind: .service, userID: nil, name: "bench", scopes: [.credentialsRead], expiresAt: nil,
        audit: AuditEntry(actor: .operator, action: .tokenCreate))
    let gateway = try await runtime.integrations.create(
        ownerID: user.id, name: "bench gateway", type: .openai, config: [:], credentials: .apiKey(fakeProviderKey),
        actor: .system)
    let (gatewayToken, _) = try await runtime.tokens.create(
        kind: .service, userID: nil, name: "bench gateway", scopes: [.gatewayUse], expiresAt: nil,
        audit: AuditEntry(actor: .operator, action: .tokenCreate))
    let (pat, _) = try await runtime.tokens.create(
        kind: .personal, userID: user.id, name: "bench", scopes: [.integrationsRead, .integrationsWrite],
        expiresAt: nil,
        audit: AuditEntry(actor: .operator, action: .tokenCreate))
    let (cookie, session) = try await runtime.sessions.create(userID: user.id, lifetime: .seconds(24 * 3600))
    await runtime.shutdown()
    print("INTEGRATION=\(first.id.lowercasedText)")
    print("SERVICE_TOKEN=\(service)")
    print("PAT=\(pat)")
    print("SESSION=\(cookie)")
    print("CSRF=\(session.csrfToken)")
    print("GATEWAY_INTEGRATION=\(gateway.id.lowercasedText)")
    print("GATEWAY_TOKEN=\(gatewayToken)")
    print("PROVIDER_KEY=\(fakeProviderKey)")
}
