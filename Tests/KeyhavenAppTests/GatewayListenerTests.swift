import AsyncHTTPClient
import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenTestSupport
import NIOCore
import NIOHTTP1
import SQLKit
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The gateway's own listener (`KEYHAVEN_GATEWAY_ADDRESS`): no second port unless it is set; when set, a port that
/// serves only the gateway, answers exactly as the public port does, keeps connections alive, cuts the ones that
/// stall, and no malformed request stops.
@Suite("Gateway listener")
struct GatewayListenerTests: GatewayHarness {
    // MARK: The setting

    @Test("KEYHAVEN_GATEWAY_ADDRESS is off by default, HOST:PORT when set, and refused otherwise")
    func setting() async throws {
        func load(_ environment: [String: String]) async throws -> KeyhavenConfiguration {
            try KeyhavenConfiguration(
                reader: try await KeyhavenConfiguration.reader(
                    environment: environment, environmentFile: "/nonexistent/.env"))
        }
        let defaults = try await load([:])
        #expect(defaults.gatewayAddress == nil)
        #expect(defaults.description.contains("gateway_listener=off"))
        let set = try await load(["KEYHAVEN_GATEWAY_ADDRESS": "[::1]:8081"])
        #expect(set.gatewayAddress == .init(host: "::1", port: 8081))
        #expect(set.description.contains("gateway_listener=[::1]:8081"))
        for bad in ["8081", "host:99999", ":8081", "127.0.0.1:port"] {
            do {
                _ = try await load(["KEYHAVEN_GATEWAY_ADDRESS": bad])
                Issue.record("\(bad) was accepted")
            } catch let error as KeyhavenError {
                #expect(error.message.contains("KEYHAVEN_GATEWAY_ADDRESS"))
            }
        }
    }

    /// The TCP ports process `pid` listens on, from its open sockets and the kernel's socket tables.
    static func listeningPorts(of pid: Int32) -> [Int] {
        let descriptors = "/proc/\(pid)/fd"
        let sockets = Set(
            ((try? FileManager.default.contentsOfDirectory(atPath: descriptors)) ?? []).compactMap { name in
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(descriptors)/\(name)"))
                    .flatMap { $0.hasPrefix("socket:[") ? String($0.dropFirst(8).dropLast()) : nil }
            })
        var ports: [Int] = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = Self.read(table)
            for line in text.split(separator: "\n").dropFirst() {
                // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
                let fields = line.split(separator: " ")
                guard fields.count > 9, fields[3] == "0A", sockets.contains(String(fields[9])),
                    let port = fields[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) })
                else { continue }
                ports.append(port)
            }
        }
        return ports.sorted()
    }

    /// A file of /proc read to its end (they report a size of 0, so a reader that trusts the size reads nothing).
    static func read(_ path: String) -> String {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return "" }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = Glibc.read(descriptor, &chunk, chunk.count)
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test(
        """
        serve binds one port without KEYHAVEN_GATEWAY_ADDRESS; with it a second, which serves only \
        the gateway, and both stop on SIGTERM
        """
    )
    func secondPort() async throws {
        let binary = try KeyhavenBinary()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }

        let plain = try binary.start(["serve"], environment: directory.serveEnvironment, in: directory.path)
        defer { if plain.isRunning { plain.signal(SIGKILL) } }
        let only = try #require(await plain.listeningPort(), "\(plain.stderr)")
        // Past the start, nothing else is bound a moment later either.
        try await Task.sleep(for: .milliseconds(300))
        #expect(Self.listeningPorts(of: plain.processIdentifier) == [only])
        #expect(!plain.stderr.contains("Gateway listener") && plain.stderr.contains("gateway_listener=off"))
        plain.signal(SIGTERM)
        #expect(await plain.wait(timeout: .seconds(20)) == 0)

        var environment = directory.serveEnvironment
        environment["KEYHAVEN_GATEWAY_ADDRESS"] = "127.0.0.1:0"
        let server = try binary.start(["serve"], environment: environment, in: directory.path)
        defer { if server.isRunning { server.signal(SIGKILL) } }
        let main = try #require(await server.listeningPort(), "\(server.stderr)")
        let gateway = try #require(await server.gatewayPort(), "\(server.stderr)")
        #expect(main != gateway)
        #expect(
            Self.listeningPorts(of: server.processIdentifier) == [main, gateway].sorted(),
            "\(server.stderr.split(separator: "\n").filter { $0.contains("listening") })")

        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            func send(_ port: Int, _ path: String, method: HTTPMethod = .GET) async throws -> (Int, String, String?) {
                var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
                request.method = method
                let response = try await client.execute(request, timeout: .seconds(10))
                let body = try await response.body.collect(upTo: 1 << 20)
                return (Int(response.status.code), String(buffer: body), response.headers.first(name: "content-type"))
            }
            // Only the gateway: anything else answers 404 with the JSON error body.
            for path in ["/healthz", "/api/integrations", "/", "/metrics", "/openapi.json"] {
                let (status, body, type) = try await send(gateway, path)
                #expect(status == 404 && body.contains(#""code":"not_found""#), "\(path): \(status) \(body)")
                #expect(type == "application/json; charset=utf-8")
            }
            let (anonymous, body, _) = try await send(
                gateway, "/gateway/\(UUID().uuidString.lowercased())/v1/chat/completions", method: .POST)
            #expect(anonymous == 401 && body.contains(#""code":"unauthenticated""#), "\(body)")
            #expect(try await send(main, "/healthz").0 == 200)
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
        server.signal(SIGTERM)
        #expect(await server.wait(timeout: .seconds(20)) == 0, "\(server.stderr.suffix(2000))")
        let failures = server.stderr.split(separator: "\n").filter {
            $0.contains(" error ") || $0.contains(" critical ")
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    // MARK: One behaviour on both servers

    @Test(
        "every gateway request answers the same on both servers: status, error body and headers",
        arguments: TestDatabase.all)
    func sameAnswers(kind: TestDatabase) async throws {
        try await withGateway(kind, front: .listener) { api, fakes, listener, user, token in
            let router = GatewayCaller(client: listener.client, base: try await api.gatewayBase(.publicPort))
            let openai = try await integration(api, user, key: FakeProviders.openAIKey)
            let limited = try await integration(api, user, key: FakeProviders.openAIKey)
            let disabled = try await integration(api, user, key: FakeProviders.openAIKey)
            let breaking = try await integration(api, user, key: FakeProviders.openAIBreakingKey)
            _ = try await api.request(
                .patch, "/api/integrations/\(disabled)", auth: user.session, json: ["enabled": false])
            _ = try await api.request(
                .put, "/api/routes/chat", auth: user.session, json: ["integration_ids": [openai]])
            _ = try await api.request(
                .put, "/api/integrations/\(limited)/limits", auth: user.session, json: ["requests_per_minute": 1])
            let (_, reader) = try await api.serviceToken(scopes: [.credentialsRead])
            let bearer = [("authorization", "Bearer \(token)")]
            let workspace = bearer + [("keyhaven-workspace", user.id.lowercasedText)]
            let chat: [String: Any] = ["model": "gpt-4o", "messages": []]
            let unknown = UUID().uuidString.lowercased()
            // One request spends the limited integration's minute.
            #expect(
                try await router.send("/gateway/\(limited)/v1/chat/completions", headers: bearer, json: chat).status
                    == 200)
            let cases: [(String, HTTPMethod, String, [(String, String)], [String: Any]?)] = [
                ("answered", .POST, "/gateway/\(openai)/v1/chat/completions", bearer, chat),
                (
                    "answered with x-api-key", .POST, "/gateway/\(openai)/v1/chat/completions", [("x-api-key", token)],
                    chat
                ),
                ("through a route", .POST, "/gateway/route/chat/v1/chat/completions", workspace, chat),
                ("no token", .POST, "/gateway/\(openai)/v1/chat/completions", [], chat),
                (
                    "a wrong token", .POST, "/gateway/\(openai)/v1/chat/completions",
                    [("authorization", "Bearer kh_svc_x")], chat
                ),
                (
                    "no gateway:use", .POST, "/gateway/\(openai)/v1/chat/completions",
                    [("authorization", "Bearer \(reader)")], chat
                ),
                ("an unknown integration", .POST, "/gateway/\(unknown)/v1/chat/completions", bearer, chat),
                ("not an id", .POST, "/gateway/not-an-id/v1/chat/completions", bearer, chat),
                ("disabled", .POST, "/gateway/\(disabled)/v1/chat/completions", bearer, chat),
                ("rate limited", .POST, "/gateway/\(limited)/v1/chat/completions", bearer, chat),
                ("out of the API", .POST, "/gateway/\(openai)/v1/%2e%2e/admin", bearer, chat),
                ("a trailing slash", .POST, "/gateway/\(openai)/v1/chat/completions/", bearer, chat),
                ("a doubled slash", .POST, "/gateway//\(openai)/v1/chat/completions", bearer, chat),
                ("no provider path", .POST, "/gateway/\(openai)", bearer, chat),
                ("a route without its workspace", .POST, "/gateway/route/chat/v1/chat/completions", bearer, chat),
                ("an unknown route", .POST, "/gateway/route/nope/v1/chat/completions", workspace, chat),
                ("a route without a path", .POST, "/gateway/route/chat", workspace, chat),
                ("a stream broken off", .POST, "/gateway/\(breaking)/v1/chat/completions", bearer, nil),
                ("HEAD", .HEAD, "/gateway/\(openai)/v1/models", bearer, nil),
                ("OPTIONS", .OPTIONS, "/gateway/\(openai)/v1/models", bearer, nil),
                ("a GET", .GET, "/gateway/\(openai)/v1/models", bearer, nil),
                ("DELETE", .DELETE, "/gateway/\(openai)/v1/files/file-1", bearer, nil),
            ]
            let compared = [
                "content-type", "content-length", "transfer-encoding", "retry-after", "allow", "keyhaven-integration",
                "content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options",
                "cache-control",
            ]
            for (label, method, path, headers, json) in cases {
                let body = try json.map { try JSONSerialization.data(withJSONObject: $0) }
                let one = try await Self.outcome(router, method, path, headers, body)
                let other = try await Self.outcome(listener, method, path, headers, body)
                #expect(one.status == other.status, "\(label): \(one.status) / \(other.status) \(other.body)")
                #expect(Self.sameBody(one.body, other.body), "\(label): \(one.body) / \(other.body)")
                for name in compared where name != "retry-after" || one.status != 429 {
                    #expect(
                        one.headers.first(name: name) == other.headers.first(name: name),
                        "\(label): \(name) \(one.headers[name]) / \(other.headers[name])"
                    )
                }
                #expect(
                    (one.headers.first(name: "retry-after") == nil) == (other.headers.first(name: "retry-after") == nil)
                )
                let names = { (headers: HTTPHeaders) in
                    Set(headers.map { $0.name.lowercased() }).subtracting(["connection", "keep-alive"])
                }
                #expect(names(one.headers) == names(other.headers), "\(label)")
            }
            #expect(fakes.unexpected == [])
        }
    }

    /// Whether two answers' bodies are the same: equal JSON (the fake provider writes its keys in any order), or
    /// equal text.
    static func sameBody(_ one: String, _ other: String) -> Bool {
        guard let first = try? JSONSerialization.jsonObject(with: Data(one.utf8)) as? NSDictionary,
            let second = try? JSONSerialization.jsonObject(with: Data(other.utf8)) as? NSDictionary
        else { return one == other }
        return first.isEqual(second)
    }

    /// A request's answer, or how it ended when its body broke off: the status, headers and body the caller got.
    static func outcome(
        _ caller: GatewayCaller, _ method: HTTPMethod, _ path: String, _ headers: [(String, String)],
        _ json: Data?
    ) async throws -> (status: Int, headers: HTTPHeaders, body: String) {
        var request = HTTPClientRequest(url: caller.base + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let json {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: json))
        } else if method == .POST {
            request.body = .bytes(ByteBuffer(string: #"{"model":"gpt-4o","stream":true,"messages":[]}"#))
        }
        let response = try await caller.client.execute(request, timeout: .seconds(30))
        var body = ""
        do {
            for try await piece in response.body { body += String(buffer: piece) }
        } catch {
            body += "<cut short>"
        }
        return (Int(response.status.code), response.headers, body)
    }

    // MARK: Connections

    @Test(
        """
        one connection carries request after request, pipelined too, also after an answer that came \
        before its request's body was read
        """, arguments: GatewayFront.allCases)
    func keepAlive(front: GatewayFront) async throws {
        try await withGateway(front: front) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, key: FakeProviders.openAIKey)
            let port = try #require(Int(caller.base.split(separator: ":").last ?? ""))
            let connection = try RawConnection(port: port)
            let chat = #"{"model":"gpt-4o","messages":[]}"#
            func request(_ token: String?, body: String = chat) -> String {
                "POST /gateway/\(openai)/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + (token.map { "Authorization: Bearer \($0)\r\n" } ?? "")
                    + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            }
            // Refused before its 1 MB body was read: the rest is read and dropped, and the connection goes on.
            try await connection.write(request(nil, body: String(repeating: " ", count: 1 << 20)))
            let refused = await connection.receive()
            #expect(refused.answers.map(\.status) == [401] && !refused.closed)
            try await connection.write(request(token))
            let answered = await connection.receive()
            #expect(answered.answers.map(\.status) == [200] && !answered.closed)
            #expect(answered.answers.first?.header("keyhaven-integration") == openai)
            try await connection.write(request(token) + request(nil) + request(token))
            let pipelined = await connection.receive(answers: 3)
            #expect(pipelined.answers.map(\.status) == [200, 401, 200] && !pipelined.closed)
            // A request that asks for the connection to close gets its answer, then the close.
            try await connection.write(
                request(token).replacingOccurrences(of: "Host:", with: "Connection: close\r\nHost:"))
            let last = await connection.receive()
            #expect(last.answers.map(\.status) == [200])
            let closedAfter = last.closed ? true : await connection.receive(timeout: .seconds(2)).closed
            #expect(closedAfter)
            #expect(fakes.modelCalls.count == 4)
        }
    }

    @Test(
        "a connection that sends half a head, or stays idle, is closed after the head deadline",
        arguments: GatewayFront.allCases)
    func headDeadline(front: GatewayFront) async throws {
        try await withGateway(front: front, configure: { $0.requestHeadTimeout = .seconds(1) }) {
            api, _, caller, _, _ in
            let port = try #require(Int(caller.base.split(separator: ":").last ?? ""))
            let trickling = try RawConnection(port: port)
            try await trickling.write("POST /gateway/")
            let idle = try RawConnection(port: port)
            // Each closed by the 1 s head deadline, well within its own wait.
            #expect(await trickling.receive(timeout: .seconds(6)).closed)
            #expect(await idle.receive(timeout: .seconds(6)).closed)
        }
    }

    @Test(
        """
        a caller that leaves in the middle of a stream: the provider's connection is let go and the \
        usage recorded once
        """, arguments: GatewayFront.allCases)
    func callerLeavesMidStream(front: GatewayFront) async throws {
        try await withGateway(front: front) { api, fakes, caller, user, token in
            let slow = try await integration(api, user, key: FakeProviders.openAISlowKey)
            let port = try #require(Int(caller.base.split(separator: ":").last ?? ""))
            let connection = try RawConnection(port: port)
            let body = #"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#
            try await connection.write(
                "POST /gateway/\(slow)/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + "Authorization: Bearer \(token)\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            var received = 0
            for _ in 0..<100 where received < 200 {
                _ = connection.readSome(64, into: &received)
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(received >= 200, "the stream began")
            connection.close()
            // The rest of the stream takes 5 s: it is cut well before that.
            for _ in 0..<150 where fakes.abandonedStreams == 0 { try await Task.sleep(for: .milliseconds(20)) }
            #expect(fakes.abandonedStreams == 1)
            let id = try #require(UUID(uuidString: slow))
            func events() async throws -> Int {
                try await api.handle.database.withConnection { sql in
                    try await sql.raw(
                        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM usage_events WHERE integration_id = \(bind: id)"
                    ).first()?.decode(column: "n", as: Int.self) ?? 0
                }
            }
            for _ in 0..<200 where try await events() == 0 { try await Task.sleep(for: .milliseconds(20)) }
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await events() == 1)
        }
    }

    @Test(
        """
        on the listener a caller that does not read its answer stops the provider's: a large download \
        stays within the buffers on the way, then arrives whole
        """)
    func answerBackpressure() async throws {
        // The listener only: through the router the download has been seen to run on, 200 MB of it unread, while
        // the machine was busy.
        try await withGateway(front: .listener) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, key: FakeProviders.openAIKey)
            let port = try #require(Int(caller.base.split(separator: ":").last ?? ""))
            let connection = try RawConnection(port: port, receiveBuffer: 65536)
            try await connection.write(
                "GET /gateway/\(openai)/v1/files/large/content HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + "Authorization: Bearer \(token)\r\n\r\n")
            // The caller reads nothing for a while: the download stops at what the buffers on the way hold.
            var stalled = 0
            for _ in 0..<30 {
                try await Task.sleep(for: .milliseconds(100))
                let sent = fakes.largeAnswerSent
                if sent > 0, sent == stalled { break }
                stalled = sent
            }
            let held = fakes.largeAnswerSent
            // The buffers on the way are the kernel's (on loopback here a receiving socket grows to 32 MiB) and the
            // servers' own few pieces: far from the whole download.
            #expect(held > 0 && held < FakeProviders.largeAnswerBytes / 2, "\(held) bytes written while unread")
            // Then it reads: the whole download arrives.
            let first = try #require(await connection.receiveHead())
            #expect(first.status == 200)
            #expect(first.header("content-length") == String(FakeProviders.largeAnswerBytes))
            let rest = await connection.discard(upTo: FakeProviders.largeAnswerBytes - first.body.count)
            #expect(first.body.count + rest == FakeProviders.largeAnswerBytes)
            #expect(fakes.largeAnswerSent == FakeProviders.largeAnswerBytes)
        }
    }

    @Test(
        """
        a provider that does not read the request stops the caller's upload: a large body stays within the \
        buffers on the way, then arrives whole
        """, arguments: GatewayFront.allCases)
    func requestBackpressure(front: GatewayFront) async throws {
        try await withGateway(front: front) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, key: FakeProviders.openAIKey)
            let port = try #require(Int(caller.base.split(separator: ":").last ?? ""))
            let connection = try RawConnection(port: port)
            let size = 256 << 20
            try await connection.write(
                "POST /gateway/\(openai)/v1/uploads/late HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + "Authorization: Bearer \(token)\r\nContent-Length: \(size)\r\n\r\n")
            let sent = Count()
            let upload = Task { try await connection.write(repeating: UInt8(ascii: "u"), count: size) { sent.add($0) } }
            // The provider reads nothing for its first 2 s: the upload stops at what the buffers on the way hold.
            try await Task.sleep(for: .milliseconds(1_500))
            let held = sent.value
            #expect(held > 0 && held < size / 2, "\(held) bytes taken while the provider read nothing")
            #expect(try await upload.value)
            let answer = try #require(await connection.receive(timeout: .seconds(60)).answers.first)
            #expect(answer.status == 200, "\(answer.text)")
            #expect(answer.text.contains("\"bytes\":\(size)"), "\(answer.text)")
            #expect(fakes.unexpected == [])
        }
    }

    // MARK: Malformed requests

    /// Requests no HTTP/1.1 parser accepts, each on a connection of its own.
    static let malformed: [(String, String)] = [
        ("not HTTP", "GARBAGE\r\n\r\n"),
        ("a request line without a version", "GET /gateway/x\r\n\r\n"),
        ("an unknown version", "GET /gateway/x/v1 HTTP/9.9\r\nHost: a\r\n\r\n"),
        ("a NUL in a header", "GET /gateway/x/v1 HTTP/1.1\r\nHost: a\r\nX-A: b\u{0}c\r\n\r\n"),
        ("a header without a name", "GET /gateway/x/v1 HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"),
        ("a space before the colon", "GET /gateway/x/v1 HTTP/1.1\r\nHost : a\r\n\r\n"),
        (
            "an oversized header",
            "GET /gateway/x/v1 HTTP/1.1\r\nHost: a\r\nX-Big: \(String(repeating: "a", count: 100_000))\r\n\r\n"
        ),
        (
            "too many headers",
            "GET /gateway/x/v1 HTTP/1.1\r\nHost: a\r\n"
                + (0..<1_100).map { "X-H\($0): v\r\n" }.joined() + "\r\n"
        ),
        (
            "two lengths", "POST /gateway/x/v1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
        ),
        ("a negative length", "POST /gateway/x/v1 HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
    ]

    @Test(
        "a malformed request line or an oversized header is answered 400 and closed; the server goes on serving",
        arguments: GatewayFront.allCases)
    func malformedRequests(front: GatewayFront) async throws {
        try await withGateway(front: front) { api, _, caller, _, _ in
            let port = try #require(Int(caller.base.split(separator: ":").last ?? ""))
            for (label, request) in Self.malformed {
                let connection = try RawConnection(port: port)
                _ = try await connection.write(request)
                let (answers, closed) = await connection.receive(timeout: .seconds(5))
                #expect(answers.map(\.status) == [400], "\(label)")
                let closedAfter = closed ? true : await connection.receive(timeout: .seconds(2)).closed
                #expect(closedAfter, "\(label)")
                let next = try RawConnection(port: port)
                try await next.write("GET /gateway/\(UUID().uuidString)/v1/models HTTP/1.1\r\nHost: a\r\n\r\n")
                #expect(await next.receive().answers.map(\.status) == [401], "after \(label)")
            }
            #expect(try await api.request(.get, "/healthz").status == .ok)
        }
    }

    @Test("generated hostile requests on the listener: never a 500, never a stop (bounded in count and time)")
    func fuzz() async throws {
        try await withGateway(front: .listener) { api, fakes, caller, user, token in
            let openai = try await integration(api, user, key: FakeProviders.openAIKey)
            _ = try await api.request(
                .put, "/api/routes/fuzz", auth: user.session, json: ["integration_ids": [openai]])
            let port = try #require(Int(caller.base.split(separator: ":").last ?? ""))
            let seed =
                ProcessInfo.processInfo.environment["KEYHAVEN_FUZZ_SEED"].flatMap { UInt64($0) }
                ?? UInt64(Date().timeIntervalSince1970 * 1000)
            var random = SplitMix64(seed: seed)
            let start = ContinuousClock.now
            var statuses: [Int: Int] = [:]
            var sent = 0
            func healthy() async throws -> Bool {
                let connection = try RawConnection(port: port)
                let body = #"{"model":"gpt-4o","messages":[]}"#
                try await connection.write(
                    "POST /gateway/\(openai)/v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
                        + "Authorization: Bearer \(token)\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
                return await connection.receive().answers.first?.status == 200
            }
            while sent < 400, start.duration(to: .now) < .seconds(40) {
                let request = HostileRequest.make(
                    integration: openai, token: token, workspace: user.id.lowercasedText, using: &random)
                sent += 1
                let connection = try RawConnection(port: port)
                _ = try await connection.write(request)
                // An answer to HEAD has no body whatever its length says (the parser skips line breaks first).
                let toHead = request.drop { $0 == "\r" || $0 == "\n" || $0 == "\r\n" }.hasPrefix("HEAD ")
                let (answers, _) = await connection.receive(timeout: .milliseconds(500), toHead: toHead)
                connection.close()
                for answer in answers {
                    statuses[answer.status, default: 0] += 1
                    let shown = "\(answer.status) \(answer.text.prefix(200))\n\(request.prefix(300))"
                    #expect(
                        (200..<600).contains(answer.status) && answer.status != 500,
                        "seed \(seed), request \(sent): \(shown)")
                }
                if sent.isMultiple(of: 50) { #expect(try await healthy(), "seed \(seed), after request \(sent)") }
            }
            #expect(try await healthy(), "seed \(seed)")
            #expect(try await api.request(.get, "/healthz").status == .ok)
            #expect(!api.logs.all.contains { $0.contains("unexpected error") }, "seed \(seed)")
            print(
                "listener fuzz, seed \(seed): \(sent) requests, answers by status "
                    + "\(statuses.sorted { $0.key < $1.key })"
            )
            _ = fakes
        }
    }
}

/// Requests built from valid gateway requests by a few random changes each: methods and paths that are not the
/// gateway's, hostile characters in the path, query and headers, lengths that lie, chunked bodies with broken
/// framing, cut short or followed by garbage.
enum HostileRequest {
    static func make(
        integration: String, token: String, workspace: String, using random: inout SplitMix64
    ) -> String {
        let bodies = [
            #"{"model":"gpt-4o","messages":[]}"#, #"{"model":"gpt-4o","stream":true,"messages":[]}"#, "", "{",
            String(repeating: "x", count: 3000),
        ]
        // Half of them are a chat completion someone may send, so that the forward, the answer and the usage are
        // reached too, not only the refusals.
        let forwardable = Bool.random(using: &random)
        var method =
            forwardable
            ? "POST"
            : ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "BREW", "get"]
                .randomElement(using: &random)!
        let chats = ["/gateway/\(integration)/v1/chat/completions", "/gateway/route/fuzz/v1/chat/completions"]
        var path =
            forwardable
            ? chats.randomElement(using: &random)!
            : (chats + [
                "/gateway/\(integration)/v1/models", "/gateway/\(UUID().uuidString)/v1/embeddings", "/gateway/route/x",
                "/healthz", "/", "*", "/gateway/\(integration)/v1/%2e%2e/%2F", "http://a/gateway/\(integration)/v1/x",
            ]).randomElement(using: &random)!
        var headers = ["Host: 127.0.0.1"]
        switch Int.random(in: 0..<(forwardable ? 2 : 4), using: &random) {
        case 0: headers.append("Authorization: Bearer \(token)")
        case 1: headers.append("x-api-key: \(token)")
        case 2: headers.append("Authorization: Bearer kh_svc_\(UInt64.random(in: 0...UInt64.max, using: &random))")
        default: break
        }
        if forwardable || Bool.random(using: &random) { headers.append("Keyhaven-Workspace: \(workspace)") }
        var body = forwardable ? bodies[Int.random(in: 0...1, using: &random)] : bodies.randomElement(using: &random)!
        var framing = Int.random(in: 0..<(forwardable ? 2 : 3), using: &random)
        let hostile = [
            "\u{0}", "\r", "\n", "\r\n", " ", "\t", "%00", "%", "%zz", "..", "//", "?", "#", "é", "\u{202E}",
            "\u{FFFF}",
            String(repeating: "A", count: 9000), "\"", "\\", ":",
        ]
        for _ in 0..<Int.random(in: forwardable ? 0...1 : 1...3, using: &random) {
            let piece = hostile.randomElement(using: &random)!
            switch Int.random(in: 0..<9, using: &random) {
            case 0:
                path.insert(
                    contentsOf: piece,
                    at: path.index(path.startIndex, offsetBy: Int.random(in: 0...path.count, using: &random)))
            case 1: path += "?key=\(piece)&alt=\(piece)"
            case 2: headers.append("X-Fuzz: \(piece)")
            case 3: headers.append("\(piece): value")
            case 4: method = piece + method
            case 5:
                let lengths = ["0", "-5", "99999999999999999999", "abc", "7", "1e3"]
                headers.append("Content-Length: \(lengths.randomElement(using: &random)!)")
            case 6: framing = 2
            case 7:
                headers.append(
                    ["Connection: close", "Transfer-Encoding: gzip", "Expect: 100-continue", "Content-Type: \(piece)"]
                        .randomElement(using: &random)!)
            default: body += piece
            }
        }
        var request = "\(method) \(path) HTTP/1.1\r\n"
        switch framing {
        case 0: headers.append("Content-Length: \(body.utf8.count)")
        case 1:
            headers.append("Transfer-Encoding: chunked")
            body = body.isEmpty ? "0\r\n\r\n" : String(body.utf8.count, radix: 16) + "\r\n" + body + "\r\n0\r\n\r\n"
        default:
            headers.append("Transfer-Encoding: chunked")
            body = [
                "zz\r\n\(body)\r\n0\r\n\r\n", "5\r\nab\r\n0\r\n\r\n", "ffffffffffffffff\r\n", "1;x=\u{0}\r\na\r\n0\r\n",
            ]
            .randomElement(using: &random)!
        }
        request += headers.joined(separator: "\r\n") + "\r\n\r\n" + body
        switch Int.random(in: 0..<(forwardable ? 12 : 6), using: &random) {
        case 0: request = String(request.prefix(Int.random(in: 1...max(1, request.count), using: &random)))
        case 1: request += "GARBAGE \u{1}\u{2}\r\n\r\n"
        default: break
        }
        return request
    }
}
