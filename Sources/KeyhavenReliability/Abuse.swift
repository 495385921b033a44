import AsyncHTTPClient
import Foundation
import KeyhavenApp
import KeyhavenClient
import KeyhavenTestSupport
import NIOCore
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Hostile clients against one server while a well-behaved client keeps reading an integration: bad input gets a
/// clear 4xx at once, connections that make no progress (idle, trickling a head or a body, never reading) are
/// closed within the server's deadlines, memory stays bounded, and the well-behaved client's p99 stays under
/// 100 ms.
struct Abuse: Sendable {
    let deployment: Deployment
    /// The server's deadlines for this run (short, so the run is short).
    static let headTimeout = 2
    static let bodyTimeout = 3

    func run(log: (String) -> Void) async throws -> [String] {
        ProcessLimits.raiseOpenFiles()
        let port = try FakeProviders.freePort()
        let server = try await deployment.serve(
            port: port,
            extra: [
                "KEYHAVEN_REQUEST_HEAD_TIMEOUT": String(Self.headTimeout),
                "KEYHAVEN_REQUEST_BODY_TIMEOUT": String(Self.bodyTimeout),
            ])
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        // The well-behaved client's key, and two sent in requests that are refused.
        let keys = (0..<3).map { _ in Ledger.newKey() }
        var problems: [String] = []
        do {
            problems = try await run(
                port: port, pid: server.processIdentifier, keys: keys, http: http, log: log)
        } catch {
            problems.append("stopped early: \(error)")
        }
        if !server.isRunning { problems.append("the server stopped") }
        let output = await stop([server])
        try? await http.shutdown()
        if !leakedKeys(keys, in: output).isEmpty { problems.append("a credential appears in the server's output") }
        return problems
    }

    private func run(port: Int, pid: Int32, keys: [String], http: HTTPClient, log: (String) -> Void) async throws
        -> [String]
    {
        var problems: [String] = []
        let base = "http://127.0.0.1:\(port)"
        let token = deployment.personalToken
        // One integration for the well-behaved client.
        let id = try await KeyhavenClient(baseURL: URL(string: base)!, token: token, httpClient: http)
            .createIntegration(NewIntegration(name: "abused", credentials: .openAI(apiKey: keys[0]))).id
            .uuidString

        try await Task.sleep(for: .milliseconds(300))
        let rssBefore = residentKilobytes(pid)
        let stop = StopFlag()
        let latencies = Mutex<[Double]>([])
        let wellBehaved = Task {
            var request = HTTPClientRequest(url: base + "/api/integrations/\(id)")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            let clock = ContinuousClock()
            var failures = 0
            while !stop.isSet {
                let started = clock.now
                let status = try? await http.execute(request, timeout: .seconds(5)).status
                latencies.withLock { $0.append((clock.now - started) / .milliseconds(1)) }
                if status != .ok { failures += 1 }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return failures
        }

        // Bad input, each over a new connection: a clear 4xx within 2 s.
        let bad: [(String, Data)] = [
            ("a body over the limit", Data(repeating: UInt8(ascii: "a"), count: 2 << 20)),
            ("JSON nested 100,000 deep", Data(String(repeating: "[", count: 100_000).utf8)),
            (
                "a 10,000-character name",
                Data(
                    #"""
                    {"name":"\#(String(repeating: "n", count: 10_000))",\#
                    "type":"openai","credentials":{"api_key":"\#(keys[1])"}}
                    """#
                    .utf8)
            ),
            ("invalid UTF-8", Data([0x7B, 0x22, 0x6E, 0x22, 0x3A, 0x22, 0xC3, 0x28, 0xFF, 0x22, 0x7D])),
            (
                "a NUL in a name",
                Data(#"{"name":"a\u0000b","type":"openai","credentials":{"api_key":"\#(keys[2])"}}"#.utf8)
            ),
            ("a huge JSON object", Data(("{" + (0..<40_000).map { "\"k\($0)\":1" }.joined(separator: ",") + "}").utf8)),
        ]
        for (name, payload) in bad {
            let (status, seconds) = await timed(
                .POST, base + "/api/integrations", json: payload, token: token, http: http)
            log("\(name): \(status) in " + String(format: "%.3f s", seconds))
            if !(400..<500).contains(status) || seconds > 2 {
                problems.append("\(name) answered \(status) in \(seconds) s")
            }
        }
        for (name, query) in [
            ("a page size over the cap", "limit=100000"), ("a forged cursor", "cursor=AAAA%2F%2Fforged"),
        ] {
            let (status, seconds) = await timed(.GET, base + "/api/integrations?" + query, token: token, http: http)
            log("\(name): \(status) in " + String(format: "%.3f s", seconds))
            if !(400..<500).contains(status) || seconds > 2 {
                problems.append("\(name) answered \(status) in \(seconds) s")
            }
        }

        // Connections that make no progress, all at once.
        let connectionProblems = await withTaskGroup(of: [String].self) { group in
            group.addTask { await idleConnections(port: port, count: 2000, log: say) }
            group.addTask { await trickledHeads(port: port, count: 20, log: say) }
            group.addTask { await trickledBodies(port: port, count: 20, token: token, log: say) }
            group.addTask { await unreadResponses(port: port, count: 10, log: say) }
            var all: [String] = []
            for await found in group { all += found }
            return all
        }
        problems += connectionProblems
        stop.set()
        let failures = await wellBehaved.value
        let rssAfter = residentKilobytes(pid)
        let sorted = latencies.withLock { $0 }.sorted()
        let p99 = sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, sorted.count * 99 / 100)]
        log(
            "well-behaved client: \(sorted.count) requests, \(failures) failed, p50 "
                + String(format: "%.1f ms, p99 %.1f ms", sorted.isEmpty ? 0 : sorted[sorted.count / 2], p99)
                + "; server RSS \(rssBefore / 1024) MB before, \(rssAfter / 1024) MB after")
        if failures > 0 { problems.append("the well-behaved client saw \(failures) failures") }
        if p99 > 100 { problems.append("the well-behaved client's p99 was \(p99) ms") }
        if rssAfter - rssBefore > 64 * 1024 {
            problems.append("the server grew by \((rssAfter - rssBefore) / 1024) MB")
        }
        return problems
    }

    /// The status of one request (0 without an answer) and the seconds it took.
    private func timed(_ method: HTTPMethod, _ url: String, json: Data? = nil, token: String, http: HTTPClient) async
        -> (Int, Double)
    {
        let clock = ContinuousClock()
        let started = clock.now
        let status = (try? await request(method, url, bearer: token, json: json, http: http))?.status ?? 0
        return (status, (clock.now - started) / .seconds(1))
    }

    // MARK: Connections that make no progress

    /// Opens `count` connections that send nothing; all must be closed by the server within its head deadline.
    private func idleConnections(port: Int, count: Int, log: @Sendable (String) -> Void) async -> [String] {
        let sockets = (0..<count).compactMap { _ in connect(port: port) }
        defer { for socket in sockets { close(socket) } }
        if sockets.count < count { return ["only \(sockets.count) of \(count) idle connections could be opened"] }
        let closed = await closedWithin(sockets, seconds: Double(Self.headTimeout) + 3)
        log("\(count) idle connections: \(closed) closed by the server within \(Self.headTimeout + 3) s")
        return closed == count
            ? [] : ["\(count - closed) of \(count) idle connections were still open after \(Self.headTimeout + 3) s"]
    }

    /// Sends a request head a byte every 200 ms; the server must close each within its head deadline.
    private func trickledHeads(port: Int, count: Int, log: @Sendable (String) -> Void) async -> [String] {
        let sockets = (0..<count).compactMap { _ in connect(port: port) }
        defer { for socket in sockets { close(socket) } }
        let head = Array("GET /api/integrations HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".utf8)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(Double(Self.headTimeout) + 3)
        var open = Set(sockets)
        var index = 0
        while !open.isEmpty, clock.now < deadline {
            for socket in open where sendAll(socket, [head[index % head.count]]) == false || isClosed(socket) {
                open.remove(socket)
            }
            index += 1
            try? await Task.sleep(for: .milliseconds(200))
        }
        log("\(count) clients trickling a head: \(count - open.count) closed within \(Self.headTimeout + 3) s")
        return open.isEmpty
            ? [] : ["\(open.count) clients trickling a head were still connected after \(Self.headTimeout + 3) s"]
    }

    /// Sends a head promising 1,000 bytes of body, then 10 bytes every 500 ms; the server must close each within
    /// its body deadline.
    private func trickledBodies(port: Int, count: Int, token: String, log: @Sendable (String) -> Void) async -> [String]
    {
        let sockets = (0..<count).compactMap { _ in connect(port: port) }
        defer { for socket in sockets { close(socket) } }
        let head =
            "POST /api/integrations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n"
            + "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        var open = Set(sockets.filter { sendAll($0, Array(head.utf8)) })
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(Double(Self.bodyTimeout) + 3)
        while !open.isEmpty, clock.now < deadline {
            for socket in open where sendAll(socket, Array("          ".utf8)) == false || isClosed(socket) {
                open.remove(socket)
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
        log("\(count) clients trickling a body: \(count - open.count) closed within \(Self.bodyTimeout + 3) s")
        return open.isEmpty
            ? [] : ["\(open.count) clients trickling a body were still connected after \(Self.bodyTimeout + 3) s"]
    }

    /// Pipelines many requests for a large document and never reads; the server must close each connection
    /// within its stall deadline (the unread answers are then drained to the end of the stream).
    private func unreadResponses(port: Int, count: Int, log: @Sendable (String) -> Void) async -> [String] {
        let sockets = (0..<count).compactMap { _ in connect(port: port) }
        defer { for socket in sockets { close(socket) } }
        let requests = Array(
            String(repeating: "GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", count: 400).utf8)
        for socket in sockets { _ = sendAll(socket, requests) }
        try? await Task.sleep(for: .seconds(Double(Self.bodyTimeout) + 4))
        let closed = sockets.filter { drainsToEnd($0, seconds: 3) }.count
        log("\(count) clients never reading their answers: \(closed) closed by the server")
        return closed == count ? [] : ["\(count - closed) of \(count) clients that never read were still connected"]
    }

    /// Polls until every socket is closed by the server or `seconds` pass; returns how many were closed.
    private func closedWithin(_ sockets: [Int32], seconds: Double) async -> Int {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(seconds)
        var open = Set(sockets)
        while !open.isEmpty, clock.now < deadline {
            open = open.filter { !isClosed($0) }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return sockets.count - open.count
    }
}

/// A blocking TCP connection to 127.0.0.1:`port`, or nil.
private func connect(port: Int) -> Int32? {
    RawConnection.socket(port: port)
}

/// Writes every byte without blocking for long; false if the connection is gone.
private func sendAll(_ socket: Int32, _ bytes: [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let sent = bytes[offset...].withUnsafeBytes {
            Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
        }
        if sent < 0 { return errno == EAGAIN || errno == EWOULDBLOCK }
        offset += sent
    }
    return true
}

/// Whether the server has closed the connection (end of stream or reset), without waiting.
private func isClosed(_ socket: Int32) -> Bool {
    var byte: UInt8 = 0
    let read = recv(socket, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
    if read == 0 { return true }
    return read < 0 && errno != EAGAIN && errno != EWOULDBLOCK
}

/// Reads everything until the end of the stream; false if the stream does not end within `seconds`.
private func drainsToEnd(_ socket: Int32, seconds: Double) -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while ContinuousClock.now < deadline {
        let read = recv(socket, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        if read == 0 { return true }
        if read < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK {
                usleep(10_000)
                continue
            }
            return true
        }
    }
    return false
}

/// The resident size of a process, in kilobytes.
private func residentKilobytes(_ pid: Int32) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return 0 }
    return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
}
