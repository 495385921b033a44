import NIOCore
import NIOHTTPTypes

/// Closes an HTTP connection that holds the server without making progress (SPEC §11: no client can tie the
/// server up):
///
/// - a request's head must arrive whole within `head` of the connection opening or of the previous response
///   ending: this bounds both a client that trickles its head a byte at a time and an idle keep-alive
///   connection;
/// - its body must arrive whole within `body` of the head;
/// - the responses a client does not read fast enough may keep the connection unwritable for at most `body` in
///   total while it is busy: a reader that takes a few bytes now and then makes the connection writable again and
///   again, and each stall alone is short, but their sum is bounded all the same. The sum starts afresh only once
///   every response has been read and no request is in flight, so a long-lived keep-alive connection is not cut
///   for the hiccups of hours, and a client that pipelines requests cannot restart it.
///
/// The handler runs on the connection's event loop, after the HTTP decoder.
public final class ConnectionDeadlines: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPRequestPart
    public typealias InboundOut = HTTPRequestPart
    public typealias OutboundIn = HTTPResponsePart
    public typealias OutboundOut = HTTPResponsePart

    private let head: TimeAmount
    private let body: TimeAmount
    /// Requests whose response has not ended.
    private var inFlight = 0
    private var receivingBody = false
    private var deadline: Scheduled<Void>?
    private var stalled: Scheduled<Void>?
    /// When the connection last became unwritable, while it is.
    private var unwritableSince: NIODeadline?
    /// The time spent unwritable before `unwritableSince`, since the connection was last idle.
    private var stalledBefore: TimeAmount = .zero

    public init(head: TimeAmount, body: TimeAmount) {
        self.head = head
        self.body = body
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(head, context) }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        cancel()
    }

    public func channelActive(context: ChannelHandlerContext) {
        arm(head, context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        cancel()
        context.fireChannelInactive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            inFlight += 1
            receivingBody = true
            arm(body, context)
        case .body:
            break
        case .end:
            receivingBody = false
            // The server has the whole request; the time it takes to answer is not the client's.
            deadline?.cancel()
            deadline = nil
        }
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            inFlight = max(0, inFlight - 1)
            if inFlight == 0, !receivingBody {
                arm(head, context)
                if context.channel.isWritable { stalledBefore = .zero }
            }
        }
        context.write(data, promise: promise)
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        stalled?.cancel()
        stalled = nil
        if let since = unwritableSince {
            stalledBefore = stalledBefore + (now - since)
            unwritableSince = nil
        }
        if context.channel.isWritable {
            // The answers have been taken (all but the low watermark) and nothing is in flight: the connection is
            // idle, and its next busy stretch starts afresh.
            if inFlight == 0, !receivingBody { stalledBefore = .zero }
        } else {
            unwritableSince = now
            // What is left of this busy stretch's allowance: the stalls add up.
            let left = body - stalledBefore
            let channel = context.channel
            if left <= .zero {
                channel.close(promise: nil)
            } else {
                stalled = context.eventLoop.scheduleTask(in: left) { channel.close(promise: nil) }
            }
        }
        context.fireChannelWritabilityChanged()
    }

    private func arm(_ limit: TimeAmount, _ context: ChannelHandlerContext) {
        deadline?.cancel()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: limit) { channel.close(promise: nil) }
    }

    private func cancel() {
        deadline?.cancel()
        stalled?.cancel()
        deadline = nil
        stalled = nil
    }
}
