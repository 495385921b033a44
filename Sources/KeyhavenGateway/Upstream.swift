import Foundation
import KeyhavenProviders
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Where a provider's API is: the origin the request names and the address it is reached at, resolved within the
/// egress policy (SPEC §7), so a request never waits for a lookup and never goes where the policy refused.
struct UpstreamOrigin: Hashable, Sendable {
    /// The host as the URL names it (brackets stripped from an IPv6 literal): the TLS server name and `Host`.
    var host: String
    var port: Int
    var tls: Bool
    /// The IP address connected to.
    var address: String

    /// The `Host` header: the port only when it is not the scheme's own.
    var hostHeader: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == (tls ? 443 : 80) ? name : "\(name):\(port)"
    }
}

/// HTTP/1.1 connections to provider endpoints, kept alive between requests: an exchange is written and read by the
/// caller's own task directly on the connection, with no task or queue in between. A connection goes back to the
/// pool only after its answer was read to the end and both sides said keep-alive; any other ending closes it.
/// Connects within 5 s, closes a connection on which nothing arrives for 5 minutes, follows no redirects and
/// never decompresses.
///
/// Idle connections are kept per event loop: a request takes one on its caller's own loop first (the answer then
/// arrives on the thread that writes it back to the caller), else one idle on another loop, and opens a new one on
/// its caller's loop.
final class UpstreamConnections: Sendable {
    /// How long an idle connection may be reused: below the keep-alive timeouts servers commonly use, so a request
    /// rarely meets a connection its server is closing.
    static let idleReuse: Duration = .seconds(20)
    /// Idle connections kept per origin, over all event loops.
    static let idleLimit = 256

    private struct Idle {
        var connection: UpstreamConnection
        var since: ContinuousClock.Instant
    }

    /// One origin's idle connections, by the event loop their channel lives on.
    private struct OriginPool {
        var byLoop: [ObjectIdentifier: [Idle]] = [:]
        /// How many connections `byLoop` holds in all.
        var count = 0

        /// The most recently idled connection on `loop`, else on any other loop.
        mutating func take(preferring loop: ObjectIdentifier) -> Idle? {
            if let idle = byLoop[loop]?.popLast() {
                count -= 1
                return idle
            }
            for key in byLoop.keys {
                if let idle = byLoop[key]?.popLast() {
                    count -= 1
                    return idle
                }
            }
            return nil
        }
    }

    private let idle = Mutex<[UpstreamOrigin: OriginPool]>([:])
    private let tlsConfiguration: TLSConfiguration
    private let tls = Mutex<NIOSSLContext?>(nil)

    /// Connections verified with `tls`: by default the system's trust roots, the certificate's name checked.
    init(tls: TLSConfiguration = .makeClientConfiguration()) {
        tlsConfiguration = tls
    }

    /// The event loop a request's connection should live on: `preferred` (the caller's own), else the loop this
    /// code runs on, else any of the shared group's.
    static func loop(preferring preferred: (any EventLoop)?) -> any EventLoop {
        preferred ?? MultiThreadedEventLoopGroup.currentEventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
    }

    /// A connection to `origin`: an idle one if there is one (on `loop` first), else a new one on `loop`.
    ///
    /// - Returns: the connection and whether it was reused (a reused one may have been closed by its server just
    ///   now, so a request that fails on it before any answer may be sent again on a new one).
    func connection(
        to origin: UpstreamOrigin, on loop: any EventLoop
    ) async throws -> (UpstreamConnection, reused: Bool) {
        let now = ContinuousClock.now
        let key = ObjectIdentifier(loop)
        var stale: [UpstreamConnection] = []
        let reusable = idle.withLock { idle -> UpstreamConnection? in
            guard idle[origin] != nil else { return nil }
            while let last = idle[origin]?.take(preferring: key) {
                if now - last.since < Self.idleReuse, last.connection.isOpen { return last.connection }
                stale.append(last.connection)
            }
            return nil
        }
        for connection in stale { connection.close() }
        if let reusable { return (reusable, true) }
        return (try await connect(to: origin, on: loop), false)
    }

    /// Takes back `connection` after an exchange that ended cleanly with keep-alive.
    func release(_ connection: UpstreamConnection) {
        let kept = idle.withLock { idle in
            guard connection.isOpen, let loop = connection.loop,
                idle[connection.origin, default: OriginPool()].count < Self.idleLimit
            else { return false }
            idle[connection.origin, default: OriginPool()].byLoop[ObjectIdentifier(loop), default: []].append(
                Idle(connection: connection, since: .now))
            idle[connection.origin, default: OriginPool()].count += 1
            return true
        }
        if !kept { connection.close() }
    }

    private func connect(to origin: UpstreamOrigin, on loop: any EventLoop) async throws -> UpstreamConnection {
        let context = try origin.tls ? tlsContext() : nil
        let connection = UpstreamConnection(origin: origin)
        let serverName = EgressPolicy.parseLiteral(origin.host) == nil ? origin.host : nil
        // A loop of another kind (a test's) cannot hold a socket: the shared group's is used instead.
        let bootstrap =
            ClientBootstrap(validatingGroup: loop) ?? ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        let channel =
            try await bootstrap
            .connectTimeout(.seconds(5))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let context {
                        try pipeline.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverName))
                    }
                    // A header value holding CR or LF fails the write and closes the connection: it cannot split
                    // the request.
                    try pipeline.addHTTPClientHandlers(enableOutboundHeaderValidation: true)
                    try pipeline.addHandler(IdleStateHandler(readTimeout: .minutes(5)))
                    try pipeline.addHandler(UpstreamHandler(connection: connection))
                }
            }
            .connect(host: origin.address, port: origin.port).get()
        connection.attach(channel)
        return connection
    }

    /// The TLS context, made on first use (it loads the trust roots).
    private func tlsContext() throws -> NIOSSLContext {
        try tls.withLock { context in
            if let context { return context }
            let made = try NIOSSLContext(configuration: tlsConfiguration)
            context = made
            return made
        }
    }

    /// Closes every idle connection.
    func shutdown() {
        let all = idle.withLock { idle in
            defer { idle = [:] }
            return idle.values.flatMap { pool in pool.byLoop.values.flatMap { $0.map(\.connection) } }
        }
        for connection in all { connection.close() }
    }
}

/// Why an exchange ended before its answer did.
enum UpstreamFailure: Error {
    /// The connection closed (or failed) with parts of the answer still to come.
    case closed
    /// Reading the caller's body failed (the caller went away, or sent more than the server accepts).
    case requestBody(any Error)
}

/// One connection's answer parts, handed from its event loop to the task reading them. At most a few parts wait:
/// past that the connection stops reading from the socket until the reader catches up, so a slow caller slows the
/// provider instead of filling memory.
final class UpstreamConnection: Sendable {
    let origin: UpstreamOrigin

    /// Parts held before reading from the socket pauses.
    static let highWater = 8

    private struct State {
        var channel: (any Channel)?
        var parts: [HTTPClientResponsePart] = []
        var waiter: CheckedContinuation<HTTPClientResponsePart, any Error>?
        var failed = false
        /// A `read` held back while too many parts wait.
        var heldRead = false

        enum Taken {
            case part(HTTPClientResponsePart, resumeReading: (any Channel)?)
            case failed
            case wait
        }

        /// The first waiting part, and the channel to read from again if a held read may now go on.
        mutating func take() -> Taken {
            if !parts.isEmpty {
                let part = parts.removeFirst()
                var resume: (any Channel)?
                if heldRead, parts.count < UpstreamConnection.highWater / 2 {
                    heldRead = false
                    resume = channel
                }
                return .part(part, resumeReading: resume)
            }
            return failed ? .failed : .wait
        }
    }

    private let state = Mutex(State())

    init(origin: UpstreamOrigin) {
        self.origin = origin
    }

    func attach(_ channel: any Channel) {
        state.withLock { $0.channel = channel }
    }

    /// The event loop the connection's channel lives on; nil before it is attached.
    var loop: (any EventLoop)? {
        state.withLock { $0.channel?.eventLoop }
    }

    var isOpen: Bool {
        state.withLock { !$0.failed && $0.parts.isEmpty && ($0.channel?.isActive ?? false) }
    }

    var channel: any Channel {
        state.withLock { $0.channel! }
    }

    func close() {
        state.withLock { $0.channel }?.close(promise: nil)
    }

    /// The next part of the answer.
    ///
    /// - Throws: ``UpstreamFailure/closed`` once the connection has closed and every part that came was read, or
    ///   `CancellationError` (the connection is then closed).
    func next() async throws -> HTTPClientResponsePart {
        switch state.withLock({ $0.take() }) {
        case .part(let part, let channel):
            channel?.read()
            return part
        case .failed:
            throw UpstreamFailure.closed
        case .wait:
            break
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let taken = state.withLock { state in
                    let taken = state.take()
                    if case .wait = taken { state.waiter = continuation }
                    return taken
                }
                switch taken {
                case .part(let part, let channel):
                    channel?.read()
                    continuation.resume(returning: part)
                case .failed:
                    continuation.resume(throwing: UpstreamFailure.closed)
                case .wait:
                    break
                }
            }
        } onCancel: {
            close()
        }
    }

    // MARK: From the event loop

    fileprivate func deliver(_ part: HTTPClientResponsePart) {
        let waiter = state.withLock { state in
            guard let waiter = state.waiter else {
                state.parts.append(part)
                return nil as CheckedContinuation<HTTPClientResponsePart, any Error>?
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume(returning: part)
    }

    fileprivate func fail() {
        let waiter = state.withLock { state in
            state.failed = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(throwing: UpstreamFailure.closed)
    }

    /// Whether the socket may be read now; if not, the read is held until the reader catches up.
    fileprivate func mayRead() -> Bool {
        state.withLock { state in
            guard state.parts.count >= Self.highWater else { return true }
            state.heldRead = true
            return false
        }
    }
}

/// The last handler of a provider connection: passes the answer's parts to ``UpstreamConnection`` and holds reads
/// back while its reader is behind.
private final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let connection: UpstreamConnection

    init(connection: UpstreamConnection) {
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection.deliver(unwrapInboundIn(data))
    }

    func read(context: ChannelHandlerContext) {
        if connection.mayRead() { context.read() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.fail()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.fail()
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

extension UpstreamConnections {
    /// Sends `head` with `bytes` or `stream` as its body (or none) to `origin` and reads the answer's head.
    ///
    /// A request that is safe to repeat (RFC 9110 §9.2.2) and met a kept-alive connection its server had just
    /// closed is sent once more on a new connection; nothing else is ever sent twice.
    ///
    /// - Throws: ``UpstreamFailure/closed`` (or a connect error) when no answer came: the provider is unreachable;
    ///   ``UpstreamFailure/requestBody(_:)`` when reading `stream` failed; ``Gateway/Refusal/invalidBody`` when
    ///   `stream` holds more or fewer bytes than `length`.
    /// `loop` is the caller's own event loop, if known: a connection living there is preferred.
    func send<Body: AsyncSequence & Sendable>(
        _ head: HTTPRequestHead, bytes: ByteBuffer?, stream: Body?, length: Int?, to origin: UpstreamOrigin,
        on loop: (any EventLoop)? = nil
    ) async throws -> (HTTPResponseHead, UpstreamAnswer) where Body.Element == ByteBuffer {
        var head = head
        head.headers.replaceOrAdd(name: "host", value: origin.hostHeader)
        let repeatable = stream == nil && [.GET, .HEAD, .PUT, .DELETE, .OPTIONS].contains(head.method)
        let loop = Self.loop(preferring: loop)
        var retried = false
        while true {
            let (connection, reused) = try await connection(to: origin, on: loop)
            do {
                return try await exchange(head, bytes: bytes, stream: stream, length: length, on: connection)
            } catch UpstreamFailure.closed where reused && repeatable && !retried {
                retried = true
            }
        }
    }

    private func exchange<Body: AsyncSequence & Sendable>(
        _ head: HTTPRequestHead, bytes: ByteBuffer?, stream: Body?, length: Int?, on connection: UpstreamConnection
    ) async throws -> (HTTPResponseHead, UpstreamAnswer) where Body.Element == ByteBuffer {
        let channel = connection.channel
        var complete = true
        if let stream {
            do {
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                var written = 0
                var pieces = stream.makeAsyncIterator()
                while true {
                    let piece: ByteBuffer?
                    do {
                        piece = try await pieces.next()
                    } catch {
                        throw UpstreamFailure.requestBody(error)
                    }
                    guard let piece else { break }
                    written += piece.readableBytes
                    if let length, written > length { throw Gateway.Refusal.invalidBody }
                    try await channel.writeAndFlush(HTTPClientRequestPart.body(.byteBuffer(piece))).get()
                }
                if let length, written != length { throw Gateway.Refusal.invalidBody }
                try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
            } catch let error where error is Gateway.Refusal || error is UpstreamFailure {
                // The caller's own body broke off or was not what it said: the provider got half a request.
                connection.close()
                throw error
            } catch {
                // The provider may have answered before taking the whole body (a 413): that answer is passed on,
                // and the connection is not reused.
                complete = false
            }
        } else {
            // The whole request in one turn of the connection's loop, flushed once.
            let send: @Sendable () -> Void = {
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                if let bytes, bytes.readableBytes > 0 {
                    channel.write(HTTPClientRequestPart.body(.byteBuffer(bytes)), promise: nil)
                }
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            }
            if channel.eventLoop.inEventLoop { send() } else { channel.eventLoop.execute(send) }
        }
        do {
            var informational = false
            while true {
                switch try await connection.next() {
                case .head(let answer) where answer.status.code < 200:
                    // 100 Continue, 103 Early Hints: not the answer; their end follows.
                    informational = true
                case .head(let answer):
                    let reusable = complete && answer.isKeepAlive
                    return (answer, UpstreamAnswer(connection: connection, pool: self, reusable: reusable))
                case .end where informational:
                    informational = false
                case .body, .end:
                    throw UpstreamFailure.closed
                }
            }
        } catch {
            connection.close()
            throw UpstreamFailure.closed
        }
    }
}

/// An answer whose head has been read: its body is read from the connection, which goes back to the pool at the
/// answer's end if it may be reused, and is closed otherwise, also when the answer is dropped unread.
final class UpstreamAnswer: Sendable {
    let connection: UpstreamConnection
    let pool: UpstreamConnections
    let reusable: Bool
    private let ended = Atomic(false)

    init(connection: UpstreamConnection, pool: UpstreamConnections, reusable: Bool) {
        self.connection = connection
        self.pool = pool
        self.reusable = reusable
    }

    deinit {
        if !ended.load(ordering: .relaxed) { connection.close() }
    }

    /// The next piece of the body, nil at its end.
    func next() async throws -> ByteBuffer? {
        guard !ended.load(ordering: .relaxed) else { return nil }
        let part: HTTPClientResponsePart
        do {
            part = try await connection.next()
        } catch {
            abandon()
            throw error
        }
        switch part {
        case .body(let chunk):
            return chunk
        case .end:
            if !ended.exchange(true, ordering: .relaxed) {
                if reusable { pool.release(connection) } else { connection.close() }
            }
            return nil
        case .head:
            abandon()
            throw UpstreamFailure.closed
        }
    }

    /// Closes the connection: the rest of the answer is not wanted.
    func abandon() {
        if !ended.exchange(true, ordering: .relaxed) { connection.close() }
    }
}

/// The body of an ``UpstreamAnswer``, as a sequence of pieces.
struct UpstreamBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let answer: UpstreamAnswer

    struct AsyncIterator: AsyncIteratorProtocol {
        let answer: UpstreamAnswer

        mutating func next() async throws -> ByteBuffer? {
            try await answer.next()
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(answer: answer) }
}
