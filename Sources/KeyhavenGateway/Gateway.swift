import Foundation
import KeyhavenCore
import KeyhavenProviders
import NIOCore
import NIOHTTP1
import Synchronization

/// Forwards a backend's provider request with the stored credential injected ("reference, don't read", SPEC
/// §13): the caller's own key and hop-by-hop headers are dropped, the body streams both ways, and the provider's
/// status and body come back unchanged while their usage numbers are read on the way.
public final class Gateway: Sendable {
    /// Whether the gateway forwards to `type`'s provider: its catalog entry has gateway rules (SPEC §16).
    public static func forwards(_ type: IntegrationType) -> Bool { type.entry?.gateway != nil }

    /// Each provider's base URL, and its path without a trailing slash (prefixed to every forwarded path); a
    /// provider whose base URL holds an integration's setting (Azure OpenAI's resource) is not here.
    let bases: [IntegrationType: (url: URL, path: String)]
    /// Where each provider is, for those base URLs that hold a setting.
    let endpoints: ProviderEndpoints
    /// How access tokens for service accounts are requested (Vertex AI), and the ones in use.
    let tokenContext: ProviderClient?
    let tokens = GoogleTokens()
    /// What the caller sent that never reaches the provider (``notForwarded``, and every catalog provider's own
    /// key and setting headers).
    let dropped: Set<String>
    let clients: GatewayClients
    /// Model prices, replaceable while running.
    public let prices: Prices
    /// The most of a metered request's body read to meter it.
    public let inspectLimit: Int

    /// What a metered request's body and a JSON answer read for its usage hold in memory, with every other body
    /// held whole in the process.
    let memory: MemoryBudget

    /// Creates a gateway over the operator's endpoints and egress policy (SPEC §7) that reads up to `inspectLimit`
    /// bytes of a metered request's body, holding what it reads within `memory`.
    ///
    /// `tokens` is how an access token is asked for a service account (Vertex AI); without it, such integrations are
    /// not forwarded.
    public init(
        endpoints: ProviderEndpoints, egress: EgressPolicy, prices: Prices,
        inspectLimit: Int = MeteredEndpoints.inspectLimit, memory: MemoryBudget = MemoryBudget(capacity: 256 << 20),
        tokens: ProviderClient? = nil
    ) {
        tokenContext = tokens
        self.inspectLimit = inspectLimit
        self.memory = memory
        var bases: [IntegrationType: (url: URL, path: String)] = [:]
        var dropped = Self.notForwarded
        for entry in ProviderCatalog.current.providers where entry.gateway != nil {
            // A base URL that holds a setting (a resource, a region) is made per integration.
            if !entry.baseURL.contains("{"), let url = endpoints.base(entry.type, config: [:]) {
                bases[entry.type] = Self.base(url)
            }
            if let auth = entry.auth { dropped.insert(auth.header.lowercased()) }
            for header in entry.settings.compactMap(\.header) { dropped.insert(header.lowercased()) }
        }
        self.bases = bases
        self.endpoints = endpoints
        self.dropped = dropped
        clients = GatewayClients(egress: egress)
        self.prices = prices
    }

    /// Closes the idle provider connections.
    public func shutdown() async {
        clients.connections.shutdown()
    }

    /// Why a request is not forwarded.
    public enum Refusal: Error, Sendable, Equatable {
        /// The path could leave the provider's API (`..`, an encoded slash) or holds characters a URL cannot.
        case invalidPath
        /// The provider's endpoint is on an address the egress policy refuses, or does not resolve.
        case endpointNotAllowed
        /// The body is longer than its `Content-Length` said.
        case invalidBody
        /// A metered request's body is longer than ``Gateway/inspectLimit`` and a limit needs it metered.
        case tooLargeToMeter
        /// The endpoint is not metered (``MeteredEndpoints``) and a limit needs it metered.
        case endpointNotMetered
        /// The provider could not be reached (connection refused, timed out).
        case unreachable
        /// The process holds as many bodies in memory as its budget allows: try again shortly.
        case busy
        /// The provider's token endpoint refused the stored service account (a key deleted or disabled).
        case credentialsRefused
    }

    /// What the caller sent, minus the gateway's own prefix.
    public struct Request: Sendable {
        public var method: HTTPMethod
        /// The provider path, starting with `/` (`/v1/chat/completions`).
        public var path: String
        /// The query without its `?`, if any.
        public var query: String?
        public var headers: [(String, String)]
        /// The body's length when the caller said it.
        public var contentLength: Int?

        /// Creates a request.
        public init(method: HTTPMethod, path: String, query: String?, headers: [(String, String)], contentLength: Int?)
        {
            self.method = method
            self.path = path
            self.query = query
            self.headers = headers
            self.contentLength = contentLength
        }
    }

    /// The provider's answer, not yet read.
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        /// The body's length when nothing in it is changed on the way.
        public var contentLength: Int?
        let body: UpstreamBody
        var meter: UsageMeter
        /// See ``Metered/inputEstimate``.
        let inputEstimate: Int64?
        /// What an answer read whole holds (``readWhole()``).
        let memory: MemoryBudget

        /// What an answer that is never relayed comes to (the caller left before it started): no usage read, and
        /// the estimate of a metered request, charged as for any answer that ended without usage.
        public var unrelayed: Metered {
            Metered(model: meter.model, usage: nil, complete: false, inputEstimate: inputEstimate)
        }

        /// Reads and drops the body (an answer that is not passed on, so its connection can be reused).
        public func discard() async {
            do {
                for try await _ in body {}
            } catch {}
        }

        /// The longest answer of known length read whole and passed on in one write (``readWhole()``).
        public static let wholeLimit = 64 << 10

        /// Passes the body on, chunk by chunk, to `write`, reading the usage numbers on the way; returns what was
        /// read, also when the caller goes away or the provider breaks off (what was seen by then).
        public func relay(_ write: (ByteBuffer) async throws -> Void) async -> Reading {
            var meter = meter
            var complete = false
            do {
                for try await chunk in body {
                    let passed = meter.pass(chunk)
                    if passed.readableBytes > 0 { try await write(passed) }
                }
                // What a stream held back goes out now; a JSON answer holds nothing back, and its usage is read
                // from it once the answer has been finished (``Reading/metered()``).
                if meter.framing != .json, let rest = meter.finish() { try await write(rest) }
                complete = true
            } catch {
                body.answer.abandon()
                _ = meter.finish()
            }
            return Reading(meter: meter, complete: complete, inputEstimate: inputEstimate, held: nil)
        }

        /// The whole body of a small answer of known length (at most ``wholeLimit`` bytes), read before any of it
        /// is passed on so that the answer goes to the caller in one write, and what it carried (`complete` false
        /// when the provider broke off). Nil, with nothing read, for an answer that may be long or streams, or when
        /// the process holds as many bodies as its memory budget allows: that one is relayed (``relay(_:)``).
        public func readWhole() async -> (body: ByteBuffer, reading: Reading)? {
            guard let length = contentLength, length >= 0, length <= Self.wholeLimit,
                let held = memory.reserve(length)
            else { return nil }
            var meter = meter
            var whole = ByteBuffer()
            whole.reserveCapacity(length)
            var complete = false
            do {
                for try await chunk in body {
                    var passed = meter.pass(chunk)
                    whole.writeBuffer(&passed)
                }
                complete = whole.readableBytes == length
            } catch {
                body.answer.abandon()
                _ = meter.finish()
            }
            return (whole, Reading(meter: meter, complete: complete, inputEstimate: inputEstimate, held: held))
        }
    }

    /// What a relay read, the usage not yet taken out: for a JSON answer that means parsing it, which
    /// ``metered()`` does off the answer's path, once the answer has been passed on.
    public struct Reading: Sendable {
        var meter: UsageMeter
        /// Whether the whole answer was passed on (or, read whole, handed over to be written in one piece).
        public let complete: Bool
        let inputEstimate: Int64?
        /// The memory an answer read whole holds until it has been passed on.
        let held: MemoryBudget.Reservation?

        /// The model and usage the answer carried.
        public func metered() -> Metered {
            var meter = meter
            _ = meter.finish()
            held?.release()
            return Metered(model: meter.model, usage: meter.usage, complete: complete, inputEstimate: inputEstimate)
        }
    }

    /// What the relay read.
    public struct Metered: Sendable {
        public var model: String?
        public var usage: TokenUsage?
        /// Whether the whole answer reached the caller.
        public var complete: Bool
        /// Input tokens counted from the request (``MeteredEndpoints/estimate(bodyBytes:)``), for a metered
        /// endpoint; nil for one that is free or unmetered.
        public var inputEstimate: Int64?

        /// Creates a reading.
        public init(model: String?, usage: TokenUsage?, complete: Bool, inputEstimate: Int64?) {
            self.model = model
            self.usage = usage
            self.complete = complete
            self.inputEstimate = inputEstimate
        }

        /// What the request is charged, given the provider's `status`, and whether that is an estimate.
        ///
        /// The provider's own usage when the answer carried it (an estimate if the answer broke off: its output
        /// may be counted short). A successful answer of a metered endpoint that ended without usage (the caller
        /// went away, the provider broke off) is charged the input estimate, never nothing. An error answer bills
        /// nothing at the providers, and a free or unmetered endpoint reports nothing: both are charged no tokens.
        public func charge(status: Int) -> (tokens: TokenUsage, estimated: Bool) {
            if let usage { return (usage, !complete && inputEstimate != nil) }
            if let inputEstimate, (200..<300).contains(status) {
                return (TokenUsage(inputTokens: inputEstimate), true)
            }
            return (TokenUsage(), false)
        }
    }

    /// Sends `request` to the provider of `integration` with `credentials` injected; the body is `body`, streamed,
    /// or read first for an endpoint the gateway meters (``MeteredEndpoints``), as `metering` requires.
    ///
    /// `eventLoop` is the caller's own: a provider connection living there is preferred.
    ///
    /// - Throws: ``Refusal``, nothing sent to the provider unless the refusal is `unreachable`; or what reading
    ///   `body` threw, the provider's half-sent request then abandoned.
    public func forward<Body: AsyncSequence & Sendable>(
        _ request: Request, body: Body, integration: Integration, credentials: Credentials,
        metering: Metering = .optional, eventLoop: (any EventLoop)? = nil
    ) async throws -> Response where Body.Element == ByteBuffer {
        guard Self.isSafePath(request.path), request.query.map(Self.isSafeQuery) ?? true else {
            throw Refusal.invalidPath
        }
        guard let entry = integration.type.entry, let rules = entry.gateway,
            let base = bases[integration.type]
                ?? endpoints.base(integration.type, config: integration.config).map(Self.base)
        else {
            throw Refusal.invalidPath
        }
        // The stored credential the provider's way: an API key in its header, or a service account's access token.
        let credentialHeaders: [(String, String)]
        switch credentials {
        case .apiKey(let key):
            credentialHeaders = Self.credentialHeaders(entry, key: key, config: integration.config)
        case .googleServiceAccount(let account):
            guard let tokenContext else { throw Refusal.invalidPath }
            do {
                let token = try await tokens.token(
                    for: account, key: "\(integration.id)#\(integration.credentialVersion)", in: tokenContext)
                credentialHeaders = [("authorization", "Bearer \(token)")]
            } catch GoogleTokens.Failure.unreachable {
                throw Refusal.unreachable
            } catch {
                throw Refusal.credentialsRefused
            }
        default:
            throw Refusal.invalidPath
        }
        var target = base.path + request.path
        // The settings sent as query parameters (an Azure api-version) when the caller did not send them.
        var query = Self.withoutKey(request.query).map { [$0] } ?? []
        let sent = Set((request.query ?? "").split(separator: "&").map { $0.prefix { $0 != "=" } })
        for (name, value) in entry.queryParameters(config: integration.config) where !sent.contains(Substring(name)) {
            query.append("\(name)=\(value)")
        }
        if !query.isEmpty { target += "?" + query.joined(separator: "&") }
        let origin = try await clients.origin(of: base.url)

        var upstream = HTTPRequestHead(version: .http1_1, method: request.method, uri: target)
        for (name, value) in request.headers where forwards(name) {
            upstream.headers.add(name: name, value: value)
        }
        for (name, value) in credentialHeaders {
            upstream.headers.replaceOrAdd(name: name, value: value)
        }
        var bytes: ByteBuffer?
        var stream: ResumedBody<Body.AsyncIterator>?
        var hidesUsageChunk = false
        var requestModel = rules.usage == .gemini ? Self.geminiModel(in: request.path) : nil
        // Input tokens to charge when a metered answer ends without usage; nil for what is not metered.
        var inputEstimate: Int64?
        // The memory a metered body read whole holds until it is sent.
        var held: MemoryBudget.Reservation?
        defer { held?.release() }

        switch MeteredEndpoints.kind(integration.type, method: request.method, path: request.path) {
        case .unmetered where metering.refusesUnmetered:
            throw Refusal.endpointNotMetered
        case .metered(let streamUsageOption):
            // Read the body, whatever its framing, to learn its model and whether it streams; one too large to
            // read is refused when a limit needs it metered, and otherwise forwarded with an estimate of its size.
            let limit = inspectLimit
            if let length = request.contentLength, length > limit {
                if metering.required { throw Refusal.tooLargeToMeter }
                inputEstimate = MeteredEndpoints.estimate(bodyBytes: length)
                stream = ResumedBody(first: ByteBuffer(), rest: body.makeAsyncIterator())
                upstream.headers.replaceOrAdd(name: "content-length", value: String(length))
                break
            }
            // The bytes about to be held are reserved first; past the budget the request is turned away.
            guard let reservation = memory.reserve(min(request.contentLength ?? limit, limit)) else {
                throw Refusal.busy
            }
            held = reservation
            var pieces = body.makeAsyncIterator()
            let (collected, overflowed) = try await Self.read(
                &pieces, upTo: limit, contentLength: request.contentLength)
            if overflowed {
                if metering.required { throw Refusal.tooLargeToMeter }
                // A chunked body: what was read is a lower bound of its size.
                inputEstimate = MeteredEndpoints.estimate(bodyBytes: collected.readableBytes)
                stream = ResumedBody(first: collected, rest: pieces)
                break
            }
            let inspected = InspectedBody(
                body: Array(collected.readableBytesView), streamUsageOption: streamUsageOption)
            if inspected.deferred {
                // Answered later, billed without usage in any answer the gateway sees.
                if metering.refusesUnmetered { throw Refusal.endpointNotMetered }
            } else {
                inputEstimate = MeteredEndpoints.estimate(bodyBytes: collected.readableBytes)
            }
            requestModel = inspected.model ?? requestModel
            hidesUsageChunk = inspected.addsUsage
            // The caller's bytes go on as they came unless the option was added.
            let sent = inspected.addsUsage ? ByteBuffer(bytes: inspected.body) : collected
            bytes = sent
            upstream.headers.replaceOrAdd(name: "content-length", value: String(sent.readableBytes))
        case .free, .unmetered:
            if request.method == .GET || request.method == .HEAD || request.method == .DELETE,
                (request.contentLength ?? 0) == 0
            {
                // Sent without a body.
            } else {
                stream = ResumedBody(first: ByteBuffer(), rest: body.makeAsyncIterator())
                if let length = request.contentLength {
                    upstream.headers.replaceOrAdd(name: "content-length", value: String(length))
                }
            }
        }

        let (head, answer): (HTTPResponseHead, UpstreamAnswer)
        do {
            // A body read whole is sent with its own length (it may have grown by the usage option).
            (head, answer) = try await clients.connections.send(
                upstream, bytes: bytes, stream: stream, length: bytes == nil ? request.contentLength : nil, to: origin,
                on: eventLoop)
        } catch let refusal as Refusal {
            throw refusal
        } catch UpstreamFailure.requestBody(let error) {
            throw error
        } catch {
            throw Refusal.unreachable
        }
        let contentType = head.headers.first(name: "content-type")
        let meter = UsageMeter(
            provider: integration.type, contentType: contentType, hidesUsageChunk: hidesUsageChunk,
            fallbackModel: requestModel, memory: memory)
        var headers: [(String, String)] = []
        var contentLength: Int?
        let dropped = Self.connectionTokens(head.headers)
        for header in head.headers {
            let name = header.name.lowercased()
            if name == "content-length" {
                contentLength = Int(header.value)
            } else if Self.passesBack(name), !dropped.contains(name) {
                headers.append((header.name, header.value))
            }
        }
        return Response(
            status: Int(head.status.code), headers: headers,
            contentLength: meter.hidesUsageChunk ? nil : contentLength, body: UpstreamBody(answer: answer),
            meter: meter, inputEstimate: inputEstimate, memory: memory)
    }

    /// A base URL and its path without a trailing slash.
    static func base(_ url: URL) -> (url: URL, path: String) {
        var path = url.path(percentEncoded: true)
        while path.hasSuffix("/") { path.removeLast() }
        return (url, path)
    }

    /// Reads a body from `pieces` until it ends or holds more than `limit` bytes (`overflowed`, the rest then left
    /// in `pieces`).
    ///
    /// - Throws: ``Refusal/invalidBody`` when the body is longer or shorter than `contentLength`; what reading threw.
    static func read<Pieces: AsyncIteratorProtocol>(
        _ pieces: inout Pieces, upTo limit: Int, contentLength: Int?
    ) async throws -> (ByteBuffer, overflowed: Bool) where Pieces.Element == ByteBuffer {
        var collected = ByteBuffer()
        while let chunk = try await pieces.next() {
            var chunk = chunk
            if let length = contentLength, collected.readableBytes + chunk.readableBytes > length {
                throw Refusal.invalidBody
            }
            collected.writeBuffer(&chunk)
            if collected.readableBytes > limit { return (collected, true) }
        }
        if let length = contentLength, collected.readableBytes != length { throw Refusal.invalidBody }
        return (collected, false)
    }

    // MARK: Headers

    /// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade",
    ]

    /// What the caller sent that never reaches the provider: its own credentials (whatever the provider's
    /// spelling), Keyhaven's cookies, the headers the gateway sets itself, what would reveal the caller's network,
    /// and `accept-encoding` (the usage numbers are read from an uncompressed answer).
    static let notForwarded: Set<String> = hopByHop.union([
        "host", "content-length", "authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie",
        "openai-organization", "openai-project", "accept-encoding", "forwarded", "x-forwarded-for",
        "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "x-csrf-token",
    ])

    func forwards(_ name: String) -> Bool {
        let lowered = name.lowercased()
        return !dropped.contains(lowered) && !lowered.hasPrefix("keyhaven-")
    }

    /// What the provider answered that does not go back: hop-by-hop headers and cookies for the provider's own
    /// domain.
    static func passesBack(_ name: String) -> Bool {
        !hopByHop.contains(name) && name != "set-cookie" && name != "content-encoding"
    }

    /// Headers named in `Connection`, which are hop-by-hop too.
    static func connectionTokens(_ headers: HTTPHeaders) -> Set<String> {
        Set(
            headers[canonicalForm: "connection"].map { $0.lowercased().trimmingCharacters(in: .whitespaces) })
    }

    /// The stored credential the way each provider expects it (SPEC §13): in its catalog entry's header, with the
    /// settings that go as headers.
    static func credentialHeaders(_ entry: ProviderEntry, key: String, config: [String: JSONValue]) -> [(
        String, String
    )] {
        guard let auth = entry.auth else { return [] }
        var headers = [(auth.header.lowercased(), auth.value(key))]
        for setting in entry.settings {
            if let header = setting.header, let value = config[setting.name]?.stringValue {
                headers.append((header.lowercased(), value))
            }
        }
        return headers
    }

    // MARK: Paths

    /// A path made of segments of RFC 3986 path characters, none of them empty, `.` or `..`, and no encoded
    /// slash, backslash or dot: it cannot climb out of the provider's base path.
    static func isSafePath(_ path: String) -> Bool {
        guard path.hasPrefix("/"), path.utf8.count <= 2048 else { return false }
        let segments = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        for segment in segments {
            guard !segment.isEmpty, segment != ".", segment != "..",
                segment.utf8.allSatisfy(isPathByte)
            else { return false }
            guard segment.utf8.contains(UInt8(ascii: "%")) else { continue }
            let lowered = segment.lowercased()
            if lowered.contains("%2f") || lowered.contains("%5c") || lowered.contains("%2e") || lowered.contains("%00")
            {
                return false
            }
        }
        return true
    }

    static func isPathByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            "-._~%!$&'()*+,;=:@".utf8.contains(byte)
        }
    }

    static func isSafeQuery(_ query: String) -> Bool {
        query.utf8.count <= 4096
            && query.utf8.allSatisfy { isPathByte($0) || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") }
    }

    /// The query without a `key=` parameter: a Gemini caller may put its key there, and it is never forwarded.
    static func withoutKey(_ query: String?) -> String? {
        guard let query, !query.isEmpty else { return nil }
        let kept = query.split(separator: "&").filter { !$0.hasPrefix("key=") && $0 != "key" }
        return kept.isEmpty ? nil : kept.joined(separator: "&")
    }

    /// `gemini-2.5-flash` from `/v1beta/models/gemini-2.5-flash:generateContent`.
    static func geminiModel(in path: String) -> String? {
        guard let range = path.range(of: "/models/") else { return nil }
        let rest = path[range.upperBound...]
        let name = rest.prefix { $0 != ":" && $0 != "/" }
        return name.isEmpty ? nil : String(name)
    }
}

/// A request body held whole, sent again to each integration a fallback route tries.
public struct BufferedBody: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    let buffer: ByteBuffer

    /// The body `buffer`.
    public init(_ buffer: ByteBuffer) {
        self.buffer = buffer
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var remaining: ByteBuffer?

        public mutating func next() async -> ByteBuffer? {
            defer { remaining = nil }
            return remaining.flatMap { $0.readableBytes > 0 ? $0 : nil }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: buffer) }
}

/// Provider endpoints as the gateway reaches them: a provider's host is resolved within the egress policy and
/// connected to at that address, and the answer is cached for a minute, so a request does not wait for a lookup.
final class GatewayClients: Sendable {
    let egress: EgressPolicy
    let connections = UpstreamConnections()
    private let resolved = Mutex<[String: (origin: UpstreamOrigin, at: ContinuousClock.Instant)]>([:])

    init(egress: EgressPolicy) {
        self.egress = egress
    }

    /// Where `url` is reached.
    ///
    /// - Throws: ``Gateway/Refusal/endpointNotAllowed`` when the egress policy refuses the address or the host
    ///   does not resolve.
    func origin(of url: URL) async throws -> UpstreamOrigin {
        guard let host = url.host, !host.isEmpty else { throw Gateway.Refusal.invalidPath }
        let now = ContinuousClock.now
        if let cached = resolved.withLock({ $0[host] }), now - cached.at < .seconds(60) { return cached.origin }
        let address: String
        do {
            address = try await egress.address(for: url, origin: .operatorConfigured)
        } catch {
            throw Gateway.Refusal.endpointNotAllowed
        }
        let tls = url.scheme?.lowercased() == "https"
        let origin = UpstreamOrigin(
            host: host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: url.port ?? (tls ? 443 : 80),
            tls: tls, address: address)
        resolved.withLock { $0[host] = (origin, now) }
        return origin
    }
}
