import Foundation
import HTTPTypes
import HummingbirdCore
import KeyhavenCore
import KeyhavenServices
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// The gateway on its own listener (`KEYHAVEN_GATEWAY_ADDRESS`, SPEC §13): HTTP/1.1 served by NIO handlers on the
/// event loops, with no router in between.
///
/// A request's head is matched on its connection's event loop; the rest — the token, the integration, the limits,
/// the forward and the usage, all ``GatewayExchange``'s as on the public port — runs in a task that prefers that
/// loop as its executor and takes its provider connection from that loop's pool, so between the caller's socket and
/// the provider's the request stays on one thread unless it waits for the database. Bodies stream both ways with
/// backpressure. Connections keep the public port's header limits, deadlines (``ConnectionDeadlines``), security
/// headers, request metrics and log lines, and error bodies (``ErrorAnswer``). Any other path answers 404.
public struct GatewayListener: Sendable {
    let exchange: GatewayExchange
    let strictTransportSecurity: Bool
    let headTimeout: TimeAmount
    let bodyTimeout: TimeAmount
    let decoderLimits: NIOHTTPDecoderLimitConfiguration
    let logger: Logger
    let recordRequest: @Sendable (String, String, Int, Duration) -> Void
    let executor: @Sendable (any EventLoop) -> (any TaskExecutor)?

    /// Creates the listener's connections' setup.
    ///
    /// - Parameters:
    ///   - strictTransportSecurity: send HSTS (when the public URL is https), as the public port does.
    ///   - headTimeout: how long a request's head may take, and a connection stay idle (``ConnectionDeadlines``).
    ///   - bodyTimeout: how long its body may take, and unread answers stall the connection in total.
    ///   - decoderLimits: the public port's limits on a request's header fields.
    ///   - recordRequest: counts a finished request: method, route pattern, status, time to its answer's head.
    ///   - executor: the task executor of an event loop, which a request's task prefers.
    public init(
        exchange: GatewayExchange, strictTransportSecurity: Bool, headTimeout: TimeAmount, bodyTimeout: TimeAmount,
        decoderLimits: NIOHTTPDecoderLimitConfiguration, logger: Logger,
        recordRequest: @escaping @Sendable (String, String, Int, Duration) -> Void,
        executor: @escaping @Sendable (any EventLoop) -> (any TaskExecutor)?
    ) {
        self.exchange = exchange
        self.strictTransportSecurity = strictTransportSecurity
        self.headTimeout = headTimeout
        self.bodyTimeout = bodyTimeout
        self.decoderLimits = decoderLimits
        self.logger = logger
        self.recordRequest = recordRequest
        self.executor = executor
    }

    /// Sets up a new connection's pipeline, on its event loop: the HTTP/1.1 codec under the public port's header
    /// limits, one request at a time (the next one held back, and reading paused, until the answer has ended), the
    /// deadlines, then the gateway.
    ///
    /// - Throws: what adding a handler threw (the connection is then closed).
    public func configure(_ channel: any Channel) throws {
        let pipeline = channel.pipeline.syncOperations
        try pipeline.configureHTTPServerPipeline(
            withPipeliningAssistance: true, withErrorHandling: false, withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: decoderLimits)
        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        try pipeline.addHandler(ConnectionDeadlines(head: headTimeout, body: bodyTimeout))
        try pipeline.addHandler(GatewayConnection(listener: self))
    }

    /// The answer to a request the gateway does not serve: 405 naming the forwarded methods for another method on a
    /// gateway path, 404 for anything else, as the public port answers them.
    static func unmatched(_ method: HTTPRequest.Method, path: String) -> ErrorAnswer {
        let segments = path.split(separator: "/")
        if !GatewayExchange.methods.contains(method), segments.count >= 2, segments[0] == "gateway" {
            return ErrorAnswer.methodNotAllowed(allowed: GatewayExchange.methods.map(\.rawValue).sorted())
        }
        return KeyhavenError.notFound.answer
    }
}

/// A request as it is counted and logged: the method's label, the route pattern, when its head arrived.
struct AnsweredRequest: Sendable {
    var method: String
    var route: String
    var started: ContinuousClock.Instant
}

/// One connection of the gateway's listener, on its event loop. The pipelining handler before it lets one request
/// in at a time, so a request's head is never seen before the previous answer has ended. The request's body goes to
/// its task through a ``GatewayRequestBody``; the task's answer comes back through ``GatewayAnswerWriter``, whose
/// every write runs here.
final class GatewayConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let listener: GatewayListener
    private var context: ChannelHandlerContext?
    /// From a request's head until its answer has ended.
    private var answering = false
    /// Whether the current request has ended (true between requests).
    private var requestEnded = true
    /// The current request's body while its task may read it; once the answer has ended, the rest is dropped.
    private var body: GatewayRequestBody?
    /// Whether the connection closes once the current answer has ended: the caller asked, or stopped sending.
    private var closeAfterAnswer = false
    /// Whether a malformed request was answered: nothing more is read.
    private var refused = false
    /// A relay waiting for the connection to take more of its answer.
    private var writable: CheckedContinuation<Void, any Error>?

    init(listener: GatewayListener) {
        self.listener = listener
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closed()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed()
        context.fireChannelInactive()
    }

    /// The connection is gone: a body still arriving breaks off, a relay waiting to write stops.
    private func closed() {
        body?.fail(KeyhavenError.badRequest("The request body broke off before its end."))
        body = nil
        writable?.resume(throwing: ChannelError.ioOnClosedChannel)
        writable = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        switch unwrapInboundIn(data) {
        case .head(let request):
            // Behind the pipelining handler a head comes only between requests.
            guard !answering, requestEnded else { return context.close(promise: nil) }
            start(request, context: context)
        case .body(let piece):
            body?.yield(piece)
        case .end:
            requestEnded = true
            body?.finish()
            if !answering { body = nil }
        }
    }

    func read(context: ChannelHandlerContext) {
        guard !refused else { return }
        // Too much of the body waits for its task: the read is held until the task takes it.
        if let body, !body.mayRead() { return }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let waiting = writable {
            writable = nil
            waiting.resume()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            // The caller sends nothing more: the answer in progress goes out, then the connection closes.
            guard answering else { return context.close(promise: nil) }
            closeAfterAnswer = true
            if !requestEnded {
                body?.fail(KeyhavenError.badRequest("The request body broke off before its end."))
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// A request that is not HTTP, or a head that cannot be read as one: answered 400 and closed, as the public
    /// port does; while an answer is in progress, or on any other error, the connection is closed.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError || error is HTTP1TypeConversionError, !answering, !refused,
            context.channel.isActive
        else { return context.close(promise: nil) }
        refused = true
        let head = HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    // MARK: A request

    private func start(_ request: HTTPRequest, context: ChannelHandlerContext) {
        answering = true
        requestEnded = false
        if Self.asksToClose(request.headerFields) { closeAfterAnswer = true }
        let uri = URI(request.path ?? "/")
        let method = request.method
        var answered = AnsweredRequest(
            method: RequestRecord.method(method), route: RequestRecord.unmatched, started: ContinuousClock.now)
        guard GatewayExchange.methods.contains(method), let target = GatewayExchange.Target(path: uri.path) else {
            let refusal = GatewayListener.unmatched(method, path: uri.path)
            return writeWhole(refusal.status, headers: refusal.headers, body: refusal.body, answered)
        }
        answered.route = target.pattern
        let body = GatewayRequestBody(channel: context.channel)
        self.body = body
        let call = GatewayExchange.Call(method: method, path: uri.path, query: uri.query, headers: request.headerFields)
        let loop = context.eventLoop
        let writer = GatewayAnswerWriter(connection: NIOLoopBound(self, eventLoop: loop), loop: loop, request: answered)
        let (exchange, logger) = (listener.exchange, listener.logger)
        Task(executorPreference: listener.executor(loop)) {
            await writer.answer(call, to: target, body: body, through: exchange, logger: logger)
        }
    }

    /// Whether the request's `Connection` header names `close`.
    static func asksToClose(_ headers: HTTPFields) -> Bool {
        headers[values: .connection].contains { value in
            value.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == "close" }
        }
    }

    // MARK: The answer, from its task

    /// Writes a whole answer: its head, body and end in one turn of the loop, flushed once.
    func writeWhole(
        _ status: HTTPResponse.Status, headers: HTTPFields, body bytes: ByteBuffer, _ request: AnsweredRequest
    ) {
        guard let context, answering else { return }
        var headers = headers
        headers[.contentLength] = String(bytes.readableBytes)
        writeHead(status, headers: headers, request, context: context)
        if bytes.readableBytes > 0 { context.write(wrapOutboundOut(.body(bytes)), promise: nil) }
        end(context)
    }

    /// Writes and sends a relayed answer's head; false when the caller has gone (the request is counted all the
    /// same, as the router counts it).
    func writeHead(
        _ status: HTTPResponse.Status, headers: HTTPFields, contentLength: Int?, _ request: AnsweredRequest
    ) -> Bool {
        guard let context, answering, context.channel.isActive else {
            record(status, request)
            return false
        }
        var headers = headers
        if let contentLength { headers[.contentLength] = String(contentLength) }
        writeHead(status, headers: headers, request, context: context)
        context.flush()
        return true
    }

    private func writeHead(
        _ status: HTTPResponse.Status, headers: HTTPFields, _ request: AnsweredRequest, context: ChannelHandlerContext
    ) {
        var headers = headers
        SecurityHeaders.add(to: &headers, strictTransportSecurity: listener.strictTransportSecurity)
        headers[.date] = HTTPDate.now
        context.write(wrapOutboundOut(.head(HTTPResponse(status: status, headerFields: headers))), promise: nil)
        record(status, request)
    }

    /// Counts and logs a request once its answer's status is known, as the router's middleware does.
    private func record(_ status: HTTPResponse.Status, _ request: AnsweredRequest) {
        let code = Int(status.code)
        listener.recordRequest(request.method, request.route, code, request.started.duration(to: .now))
        RequestRecord.log(listener.logger, method: request.method, route: request.route, status: code)
    }

    /// Sends a piece of a relayed answer; returns whether the connection takes more at once.
    ///
    /// - Throws: `ChannelError.ioOnClosedChannel` once the caller has gone.
    func writeBody(_ piece: ByteBuffer) throws -> Bool {
        guard let context, answering, context.channel.isActive else { throw ChannelError.ioOnClosedChannel }
        context.writeAndFlush(wrapOutboundOut(.body(piece)), promise: nil)
        return context.channel.isWritable
    }

    /// Resumes `waiting` once the connection takes more (at once if it does now).
    func awaitWritable(_ waiting: CheckedContinuation<Void, any Error>) {
        guard let context, context.channel.isActive, writable == nil else {
            return waiting.resume(throwing: ChannelError.ioOnClosedChannel)
        }
        if context.channel.isWritable { return waiting.resume() }
        writable = waiting
    }

    /// Ends a relayed answer.
    ///
    /// - Throws: `ChannelError.ioOnClosedChannel` once the caller has gone.
    func finishRelay() throws {
        guard let context, answering, context.channel.isActive else { throw ChannelError.ioOnClosedChannel }
        end(context)
    }

    /// Cuts a relayed answer short: the connection is closed, so the caller cannot take it for a whole one.
    func abort() {
        context?.close(promise: nil)
    }

    /// The answer's end: the connection closes if it should, and what the task did not read of the body is dropped
    /// (reading goes on, to the body's end, before the next request).
    private func end(_ context: ChannelHandlerContext) {
        answering = false
        if closeAfterAnswer {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        if let body, !requestEnded, body.fail(KeyhavenError.badRequest("The answer ended before the body.")) {
            context.read()
        }
        body = nil
    }
}

/// A request's task's side of its connection: every write runs on the connection's event loop, at once when the task
/// is on it (it prefers that loop's executor), else after a hop.
struct GatewayAnswerWriter: Sendable {
    let connection: NIOLoopBound<GatewayConnection>
    let loop: any EventLoop
    let request: AnsweredRequest

    /// Answers the request through the exchange, and writes the answer or the error.
    func answer(
        _ call: GatewayExchange.Call, to target: GatewayExchange.Target, body: GatewayRequestBody,
        through exchange: GatewayExchange, logger: Logger
    ) async {
        let request = self.request
        let answer: GatewayAnswer
        do {
            answer = try await exchange.answer(call, to: target, body: body, eventLoop: loop)
        } catch {
            let refusal = ErrorAnswer.answering(error, logger: logger)
            try? await onLoop { $0.writeWhole(refusal.status, headers: refusal.headers, body: refusal.body, request) }
            return
        }
        switch answer.body {
        case .whole(let bytes):
            try? await onLoop { $0.writeWhole(answer.status, headers: answer.headers, body: bytes, request) }
        case .relayed(let relay):
            let length = relay.contentLength
            let started = try? await onLoop {
                $0.writeHead(answer.status, headers: answer.headers, contentLength: length, request)
            }
            // The caller left while the provider was answering: the answer is let go unread, and recorded as one
            // that ended without usage.
            guard started == true else { return }
            do {
                try await relay.relay(write: write, finish: { try await onLoop { try $0.finishRelay() } })
            } catch {
                try? await onLoop { $0.abort() }
            }
        }
    }

    /// Writes a piece of the answer, then waits while the connection takes no more (the caller reads slowly): the
    /// relay, and the provider's connection behind it, wait with it.
    func write(_ piece: ByteBuffer) async throws {
        guard try await onLoop({ try $0.writeBody(piece) }) == false else { return }
        let (connection, loop) = (connection, loop)
        try await withCheckedThrowingContinuation { (waiting: CheckedContinuation<Void, any Error>) in
            if loop.inEventLoop {
                connection.value.awaitWritable(waiting)
            } else {
                loop.execute { connection.value.awaitWritable(waiting) }
            }
        }
    }

    /// Runs `body` with the connection on its event loop.
    func onLoop<Result: Sendable>(
        _ body: @escaping @Sendable (GatewayConnection) throws -> Result
    ) async throws -> Result {
        if loop.inEventLoop { return try body(connection.value) }
        let connection = connection
        return try await loop.submit { try body(connection.value) }.get()
    }
}
