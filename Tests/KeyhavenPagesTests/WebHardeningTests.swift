import AsyncHTTPClient
import Foundation
import HTTPTypes
import KeyhavenCore
import KeyhavenTestSupport
import NIOCore
import Testing

@testable import KeyhavenApp

#if canImport(Glibc)
    import Glibc
#endif

/// The web server's edges: forms that change settings, who may read the metrics, what a request log line holds,
/// how long a reader may stall a connection, and how much memory buffered bodies may take.
@Suite("Web hardening")
struct WebHardeningTests {
    static let formType = "application/x-www-form-urlencoded"

    static func form(_ fields: [(String, String)]) -> Data {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return Data(
            fields.map { name, value in
                "\(name)=\(value.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")"
            }.joined(separator: "&").utf8)
    }

    /// The value a response's `Set-Cookie` gives `name`, with the cookie's whole line.
    static func cookie(_ name: String, in response: APIResponse) -> (value: String, line: String)? {
        for line in response.headers[values: .setCookie] where line.hasPrefix(name + "=") {
            let value = line.dropFirst(name.count + 1).prefix { $0 != ";" }
            return (String(value), line)
        }
        return nil
    }

    // MARK: The language switch

    @Test("the language switch needs the page's token: a signed-out reader's form token, a session's CSRF token")
    func languageSwitchNeedsToken() async throws {
        try await APIHarness.with(.sqlite) { api async throws in
            let login = try await api.request(.get, "/login", headers: [.accept: "text/html"])
            let form = try #require(Self.cookie("keyhaven_form", in: login), "the sign-in page sets the form cookie")
            #expect(login.text.contains(#"<input type="hidden" name="form_token" value="\#(form.value)">"#))
            #expect(login.text.contains(#"action="/language""#))
            func switchLanguage(cookie: String?, _ fields: [(String, String)]) async throws -> APIResponse {
                var headers: HTTPFields = [:]
                if let cookie { headers[.cookie] = cookie }
                return try await api.request(
                    .post, "/language", json: Self.form(fields), contentType: Self.formType, headers: headers)
            }
            // A page elsewhere that posts the form (no cookie, or the victim's cookie without its token) is refused.
            for (cookie, fields) in [
                (nil, [("lang", "en"), ("next", "/login")]),
                ("keyhaven_form=\(form.value)", [("lang", "en"), ("next", "/login")]),
                ("keyhaven_form=\(form.value)", [("lang", "en"), ("form_token", String(form.value.dropLast()) + "x")]),
                (nil, [("lang", "en"), ("form_token", form.value)]),
            ] as [(String?, [(String, String)])] {
                let refused = try await switchLanguage(cookie: cookie, fields)
                #expect(refused.status == .forbidden, "\(cookie ?? "no cookie") \(fields)")
                #expect(Self.cookie("keyhaven_lang", in: refused) == nil)
            }
            let switched = try await switchLanguage(
                cookie: "keyhaven_form=\(form.value)", [("lang", "en"), ("next", "/login"), ("form_token", form.value)])
            #expect(switched.status == .seeOther)
            #expect(Self.cookie("keyhaven_lang", in: switched)?.value == "en")

            // Signed in, the session's CSRF token, as on every other form.
            let user = try await api.user()
            let session = "keyhaven_session=\(user.cookie)"
            let page = try await api.request(.get, "/integrations", auth: .sessionWithoutCSRF(cookie: user.cookie))
            #expect(page.text.contains(#"<input type="hidden" name="csrf_token" value="\#(user.csrf)">"#))
            #expect(try await switchLanguage(cookie: session, [("lang", "en")]).status == .forbidden)
            #expect(
                try await switchLanguage(cookie: session, [("lang", "en"), ("csrf_token", "x")]).status == .forbidden)
            let signedIn = try await switchLanguage(cookie: session, [("lang", "en"), ("csrf_token", user.csrf)])
            #expect(signedIn.status == .seeOther)
            #expect(Self.cookie("keyhaven_lang", in: signedIn)?.value == "en")
        }
    }

    @Test(
        """
        over https the sign-in form's cookie is __Host- prefixed, \
        Secure, Path=/, without Domain; an unprefixed one is not believed
        """
    )
    func formCookieIsHostPrefixed() async throws {
        try await APIHarness.with(.sqlite, configure: { $0.publicURL = URL(string: "https://vault.example.test")! }) {
            api async throws in
            let login = try await api.request(.get, "/login", headers: [.accept: "text/html"])
            let form = try #require(
                Self.cookie("__Host-keyhaven_form", in: login), "\(login.headers[values: .setCookie])")
            let attributes = form.line.lowercased()
            #expect(attributes.contains("; secure"))
            #expect(attributes.contains("; path=/"))
            #expect(!attributes.contains("domain="))
            #expect(Self.cookie("keyhaven_form", in: login) == nil)
            // A cookie a sibling subdomain could plant (no prefix) does not stand for the form's token.
            let planted = try await api.request(
                .post, "/login",
                json: Self.form([("email", "a@example.test"), ("password", "x"), ("form_token", form.value)]),
                contentType: Self.formType, headers: [.cookie: "keyhaven_form=\(form.value)"])
            #expect(planted.status == .forbidden)
            let language = try await api.request(
                .post, "/language", json: Self.form([("lang", "en"), ("form_token", form.value)]),
                contentType: Self.formType, headers: [.cookie: "keyhaven_form=\(form.value)"])
            #expect(language.status == .forbidden)
            let accepted = try await api.request(
                .post, "/language", json: Self.form([("lang", "en"), ("form_token", form.value)]),
                contentType: Self.formType, headers: [.cookie: "__Host-keyhaven_form=\(form.value)"])
            #expect(accepted.status == .seeOther)
        }
    }

    // MARK: Metrics

    static let metricsToken = "metrics-token-" + String(repeating: "7", count: 40)

    func load(_ environment: [String: String]) async throws -> KeyhavenConfiguration {
        let reader = try await KeyhavenConfiguration.reader(
            environment: environment, environmentFile: "/nonexistent/.env")
        return try KeyhavenConfiguration(reader: reader)
    }

    /// Expects each setting to be refused with its name in the reason, and without the refused value.
    func expectRefused(_ settings: [(String, String)]) async throws {
        for (name, value) in settings {
            do {
                _ = try await load([name: value])
                Issue.record("\(name) accepted a bad value")
            } catch let error as KeyhavenError {
                #expect(error.message.contains(name))
                #expect(!error.message.contains(value) || value.count < 8)
            }
        }
    }

    @Test("metrics settings: off by default, an address as HOST:PORT, a token of 32 characters or more kept secret")
    func metricsSettings() async throws {
        let defaults = try await load([:])
        #expect(defaults.metricsToken == nil)
        #expect(defaults.metricsAddress == nil)
        let set = try await load([
            "KEYHAVEN_METRICS_TOKEN": Self.metricsToken, "KEYHAVEN_METRICS_ADDRESS": "[::1]:9090",
        ])
        #expect(set.metricsToken == Self.metricsToken)
        #expect(set.metricsAddress == .init(host: "::1", port: 9090))
        #expect(!set.description.contains(Self.metricsToken))
        #expect(
            try await load(["KEYHAVEN_METRICS_ADDRESS": "10.0.0.5:9090"]).metricsAddress
                == .init(host: "10.0.0.5", port: 9090))
        try await expectRefused([
            ("KEYHAVEN_METRICS_TOKEN", "short"), ("KEYHAVEN_METRICS_TOKEN", String(repeating: "x", count: 31) + " x"),
            ("KEYHAVEN_METRICS_ADDRESS", "9090"), ("KEYHAVEN_METRICS_ADDRESS", "host:99999"),
        ])
    }

    @Test("without a metrics token or address, /metrics is not served on the public port")
    func metricsOffByDefault() async throws {
        try await APIHarness.with(.sqlite, configure: { $0.metricsToken = nil }) { api async throws in
            #expect(try await api.request(.get, "/metrics").status == .notFound)
            #expect(try await api.request(.get, "/metrics", auth: .bearer(Self.metricsToken)).status == .notFound)
        }
    }

    @Test("with a metrics token, /metrics answers only a request that presents it")
    func metricsNeedToken() async throws {
        try await APIHarness.with(.sqlite, configure: { $0.metricsToken = Self.metricsToken }) { api async throws in
            let missing = try await api.request(.get, "/metrics")
            #expect(missing.status == .unauthorized)
            #expect(missing.headers[.wwwAuthenticate] == "Bearer")
            #expect(!missing.text.contains("keyhaven_"))
            for wrong in ["", String(Self.metricsToken.dropLast()), Self.metricsToken + "7", "kh_svc_x"] {
                #expect(try await api.request(.get, "/metrics", auth: .bearer(wrong)).status == .unauthorized)
            }
            let user = try await api.user()
            #expect(try await api.request(.get, "/metrics", auth: user.session).status == .unauthorized)
            let metrics = try await api.request(.get, "/metrics", auth: .bearer(Self.metricsToken))
            #expect(metrics.status == .ok)
            #expect(metrics.text.contains("keyhaven_http_requests_total"))
            #expect(!api.logs.all.contains { $0.contains(Self.metricsToken) })
        }
    }

    @Test(
        "with a metrics address, /metrics is served there (behind the token if one is set) and not on the public port")
    func metricsOnSeparateAddress() async throws {
        for token in [nil, Self.metricsToken] as [String?] {
            let port = try FakeProviders.freePort()
            try await APIHarness.with(
                .sqlite,
                configure: {
                    $0.metricsAddress = .init(host: "127.0.0.1", port: port)
                    $0.metricsToken = token
                }
            ) { api async throws in
                #expect(try await api.request(.get, "/metrics").status == .notFound)
                #expect(try await api.request(.get, "/metrics", auth: .bearer(Self.metricsToken)).status == .notFound)
                let client = HTTPClient(eventLoopGroupProvider: .singleton)
                do {
                    func get(_ authorization: String?) async throws -> (Int, String) {
                        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics")
                        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
                        // The second server starts beside the first: it may take a moment to listen (20 s at most).
                        var lastError: (any Error)?
                        let deadline = ContinuousClock.now + .seconds(20)
                        for _ in 0..<100 where ContinuousClock.now < deadline {
                            do {
                                let response = try await client.execute(request, timeout: .seconds(2))
                                let body = try await response.body.collect(upTo: 1 << 20)
                                return (Int(response.status.code), String(buffer: body))
                            } catch {
                                lastError = error
                                try await Task.sleep(for: .milliseconds(100))
                            }
                        }
                        throw lastError ?? TestSetupError("no answer")
                    }
                    let (status, body) = try await get(token.map { "Bearer \($0)" })
                    #expect(status == 200)
                    #expect(body.contains("keyhaven_http_requests_total"))
                    if token != nil {
                        #expect(try await get(nil).0 == 401)
                        #expect(try await get("Bearer wrong").0 == 401)
                    }
                    let other = try await client.execute(
                        HTTPClientRequest(url: "http://127.0.0.1:\(port)/healthz"), timeout: .seconds(10))
                    #expect(other.status.code == 404, "the metrics address serves nothing else")
                } catch {
                    try await client.shutdown()
                    throw error
                }
                try await client.shutdown()
            }
        }
    }

    // MARK: Request logs

    @Test(
        """
        a gateway request's log line names the route pattern: no integration id, no path, no query; \
        it is counted by that pattern
        """, arguments: GatewayFront.allCases)
    func gatewayRequestLog(front: GatewayFront) async throws {
        try await APIHarness.with(.sqlite, live: true, configure: { front.configure(&$0) }) { api async throws in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            let (_, token) = try await api.serviceToken(scopes: [.gatewayUse])
            let canary = Fixtures.canary("query")
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            var request = HTTPClientRequest(
                url: try await api.gatewayBase(front) + "/gateway/\(id)/v1/models?key=\(canary)&note=\(canary)")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            let status = try await client.execute(request, timeout: .seconds(10)).status
            try await client.shutdown()
            #expect(status == .badGateway)
            let requests = api.logs.all.filter { $0.contains(": Request ") }
            #expect(requests.contains { $0.contains("/gateway/{id}/**") && $0.contains("502") }, "\(requests)")
            let metrics = try await api.metrics().text
            #expect(
                metrics.contains(
                    #"keyhaven_http_requests_total{method="GET",route="/gateway/{id}/**",status="502"} 1"#),
                "\(metrics.split(separator: "\n").filter { $0.contains("http_requests_total") })")
            for line in requests {
                #expect(!line.contains(id), "\(line)")
                #expect(!line.contains(canary), "\(line)")
                #expect(!line.contains("v1/models"), "\(line)")
            }
            #expect(!api.logs.all.contains { $0.contains(canary) || $0.contains(token) })
        }
    }

    // MARK: Slow readers

    @Test("a reader that takes its answers 64 bytes at a time cannot hold the connection past the stall allowance")
    func slowReaderIsCut() async throws {
        // The allowance is 8 s in total. The reader drains about 1 MB/s, 64 bytes at a time: the connection becomes
        // writable again every few seconds, so no single stall reaches 8 s, and before the stalls were added up it
        // stayed open as long as the reader liked (80 MB of answers).
        try await APIHarness.with(.sqlite, live: true, configure: { $0.requestBodyTimeout = .seconds(8) }) {
            api async throws in
            let port = try #require(api.port)
            let outcome = try await SlowReader.run(port: port, requests: 400, patience: .seconds(28))
            #expect(
                outcome.closed, "the connection was still open after \(outcome.elapsed), \(outcome.bytes) bytes read")
            #expect(outcome.bytes > 0, "the reader was answered")
            #expect(try await api.request(.get, "/healthz").status == .ok)
        }
    }

    // MARK: Memory held by request bodies

    @Test("the memory budget for buffered bodies is 256 MiB unless set, in MiB")
    func bufferedBodySetting() async throws {
        #expect(try await load([:]).bufferedBodyMemory == 256 << 20)
        #expect(try await load(["KEYHAVEN_BUFFERED_BODY_MEMORY_MB": "64"]).bufferedBodyMemory == 64 << 20)
        try await expectRefused([
            ("KEYHAVEN_BUFFERED_BODY_MEMORY_MB", "0"), ("KEYHAVEN_BUFFERED_BODY_MEMORY_MB", "lots"),
        ])
    }

    @Test(
        """
        past the memory budget for buffered bodies, fallback-route \
        requests get 503 with Retry-After, and the server stays up
        """, arguments: GatewayFront.allCases)
    func bufferedBodiesAreBudgeted(front: GatewayFront) async throws {
        try await APIHarness.with(
            .sqlite, live: true,
            configure: {
                $0.bufferedBodyMemory = 8 << 20
                front.configure(&$0)
            }
        ) { api async throws in
            let port = try #require(Int(try await api.gatewayBase(front).split(separator: ":").last ?? ""))
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            let put = try await api.request(
                .put, "/api/routes/big", auth: user.session, json: ["integration_ids": [id]])
            #expect(put.status == .ok, "\(put.text)")
            let (_, token) = try await api.serviceToken(scopes: [.gatewayUse])
            let path = "/gateway/route/big/v1/chat/completions"
            // One request declares 8 MiB and sends one byte of it: it holds the whole budget while it trickles.
            let holder = try RawConnection(port: port)
            try holder.send(
                "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n"
                    + "Keyhaven-Workspace: \(user.id.lowercasedText)\r\nContent-Type: application/json\r\n"
                    + "Content-Length: \(8 << 20)\r\n\r\n{")
            var held = false
            for _ in 0..<200 where !held {
                held = api.runtime.bufferedBodies.reserved == 8 << 20
                if !held { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(held, "the trickling request holds its reservation")

            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            do {
                let body = ByteBuffer(repeating: UInt8(ascii: " "), count: 1 << 20)
                func send() async throws -> (Int, String?) {
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
                    request.method = .POST
                    request.headers.add(name: "Authorization", value: "Bearer \(token)")
                    request.headers.add(name: "Keyhaven-Workspace", value: user.id.lowercasedText)
                    request.headers.add(name: "Content-Type", value: "application/json")
                    request.body = .bytes(body)
                    let response = try await client.execute(request, timeout: .seconds(30))
                    _ = try await response.body.collect(upTo: 1 << 20)
                    return (Int(response.status.code), response.headers.first(name: "Retry-After"))
                }
                let answers = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                    for _ in 0..<4 { group.addTask { try await send() } }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(answers.map(\.0) == [503, 503, 503, 503], "\(answers)")
                #expect(answers.allSatisfy { $0.1 == "1" })
                #expect(try await api.request(.get, "/healthz").status == .ok)

                // The holder goes away: its bytes are given back, and the next request is forwarded.
                holder.close()
                var released = false
                for _ in 0..<200 where !released {
                    released = api.runtime.bufferedBodies.reserved == 0
                    if !released { try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(released)
                let after = try await send()
                #expect(after.0 == 502, "forwarded to the provider, which is not there: \(after)")
                #expect(api.runtime.bufferedBodies.reserved == 0)
            } catch {
                try await client.shutdown()
                throw error
            }
            try await client.shutdown()
        }
    }
}

/// A client that asks for many large answers at once (pipelined) and then reads them 64 bytes at a time, about
/// 1 MB/s, on a thread of its own.
enum SlowReader {
    struct Outcome: Sendable {
        var closed: Bool
        var bytes: Int
        var elapsed: Duration
    }

    static func run(port: Int, requests: Int, patience: Duration) async throws -> Outcome {
        let connection = try RawConnection(port: port, receiveBuffer: 65536)
        // Requests for the OpenAPI document (about 200 KB each): far more than the reader gets through.
        let request = "GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        guard try connection.send(String(repeating: request, count: requests)) else {
            throw TestSetupError("the server closed the connection at once")
        }
        return await withCheckedContinuation { continuation in
            let thread = Thread {
                let start = ContinuousClock.now
                var bytes = 0
                var closed = false
                // A header line that never ends, a byte at a time: once the server has closed the connection, a byte
                // sent to it is answered with a reset, which the next read sees at once, instead of the reader
                // having to drain what the kernel still holds.
                let probe =
                    Array("GET /healthz HTTP/1.1\r\nX-Slow: ".utf8) + Array(repeating: UInt8(ascii: "a"), count: 200)
                var probed = 0
                var lastProbe = ContinuousClock.now
                reading: while start.duration(to: .now) < patience {
                    // 40 reads of 64 bytes every 2 ms or so: about 1 MB/s, in small pieces.
                    burst: for _ in 0..<40 {
                        switch connection.readSome(64, into: &bytes) {
                        case .byte: break
                        case .waiting: break burst
                        case .closed:
                            closed = true
                            break reading
                        }
                    }
                    if lastProbe.duration(to: .now) > .milliseconds(250), probed < probe.count {
                        lastProbe = .now
                        if !((try? connection.send(String(decoding: [probe[probed]], as: UTF8.self))) ?? false) {
                            closed = true
                            break reading
                        }
                        probed += 1
                    }
                    usleep(2000)
                }
                let elapsed = start.duration(to: .now)
                connection.close()
                continuation.resume(returning: Outcome(closed: closed, bytes: bytes, elapsed: elapsed))
            }
            thread.start()
        }
    }
}
