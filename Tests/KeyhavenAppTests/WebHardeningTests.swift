import AsyncHTTPClient
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
@testable import KeyhavenApp
import KeyhavenCore
import KeyhavenTestSupport
import NIOCore
import Testing

/// The web server's edges: forms that change settings, who may read the metrics, what a request log line holds,
/// how long a reader may stall a connection, and how much memory buffered bodies may take.
@Suite("Web hardening")
struct WebHardeningTests {
    static let formType = "application/x-www-form-urlencoded"

    static func form(_ fields: [(String, String)]) -> Data {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return Data(fields.map { name, value in
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
            #expect(try await switchLanguage(cookie: session, [("lang", "en"), ("csrf_token", "x")]).status == .forbidden)
            let signedIn = try await switchLanguage(cookie: session, [("lang", "en"), ("csrf_token", user.csrf)])
            #expect(signedIn.status == .seeOther)
            #expect(Self.cookie("keyhaven_lang", in: signedIn)?.value == "en")
        }
    }

    @Test("over https the sign-in form's cookie is __Host- prefixed, Secure, Path=/, without Domain; an unprefixed one is not believed")
    func formCookieIsHostPrefixed() async throws {
        try await APIHarness.with(.sqlite, configure: { $0.publicURL = URL(string: "https://vault.example.test")! }) { api async throws in
            let login = try await api.request(.get, "/login", headers: [.accept: "text/html"])
            let form = try #require(Self.cookie("__Host-keyhaven_form", in: login), "\(login.headers[values: .setCookie])")
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

    // MARK: Request logs

    @Test("a gateway request's log line names the route pattern: no integration id, no path, no query")
    func gatewayRequestLog() async throws {
        try await APIHarness.with(.sqlite) { api async throws in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            let (_, token) = try await api.serviceToken(scopes: [.gatewayUse])
            let canary = Fixtures.canary("query")
            let response = try await api.request(
                .get, "/gateway/\(id)/v1/models?key=\(canary)&note=\(canary)", auth: .bearer(token))
            #expect(response.status == .badGateway, "\(response.text)")
            let requests = api.logs.all.filter { $0.contains(": Request ") }
            #expect(requests.contains { $0.contains("/gateway/{id}/**") && $0.contains("502") }, "\(requests)")
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
        try await APIHarness.with(.sqlite, live: true, configure: { $0.requestBodyTimeout = .seconds(8) }) { api async throws in
            let port = try #require(api.port)
            let outcome = try await SlowReader.run(port: port, requests: 400, patience: .seconds(28))
            #expect(outcome.closed, "the connection was still open after \(outcome.elapsed), \(outcome.bytes) bytes read")
            #expect(outcome.bytes > 0, "the reader was answered")
            #expect(try await api.request(.get, "/healthz").status == .ok)
        }
    }
}

/// A client socket to 127.0.0.1 driven by hand: what no well-behaved HTTP client does.
final class RawConnection: @unchecked Sendable {
    let descriptor: Int32
    private var closed = false

    /// Connects; `receiveBuffer` sets a small receive buffer first (a slow reader's window).
    init(port: Int, receiveBuffer: Int32? = nil) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw TestSetupError("socket failed") }
        if var size = receiveBuffer {
            setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        // Reads give up after 100 ms, so every loop over them stays bounded in time.
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            Glibc.close(descriptor)
            throw TestSetupError("connect failed")
        }
    }

    /// Sends all of `text`; false once the server has closed the connection.
    @discardableResult
    func send(_ text: String) throws -> Bool {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let sent = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { return false }
            bytes = bytes.dropFirst(sent)
        }
        return true
    }

    enum Read { case byte, waiting, closed }

    /// Reads at most `count` bytes (at most 64) without waiting; `.byte` when any arrived.
    func readSome(_ count: Int, into total: inout Int) -> Read {
        var bytes = [UInt8](repeating: 0, count: 64)
        let read = recv(descriptor, &bytes, min(count, 64), Int32(MSG_DONTWAIT))
        if read > 0 {
            total += read
            return .byte
        }
        if read < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return .waiting }
        return .closed
    }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(descriptor)
    }

    deinit { close() }
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
                let probe = Array("GET /healthz HTTP/1.1\r\nX-Slow: ".utf8) + Array(repeating: UInt8(ascii: "a"), count: 200)
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
