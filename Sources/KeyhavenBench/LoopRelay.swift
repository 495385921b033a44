import NIOCore
import NIOHTTP1
import NIOPosix

// A relay written as NIO handlers on the event loops, with no Swift task anywhere: each caller's connection has its
// own connection to the provider on the same loop, and every part is passed on as it arrives. It does no work at all
// (no token, database or usage) and exists only to measure the floor of that design beside the gateway.

/// Serves `POST /relay/<path>` on 127.0.0.1:`port`, forwarded to the fake provider on `providerPort` with the
/// bench's key injected.
func runLoopRelay(port: Int, providerPort: Int) throws {
    let server = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.backlog, value: 256)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                try channel.pipeline.syncOperations.addHandler(LoopRelayHandler(providerPort: providerPort))
            }
        }
        .bind(host: "127.0.0.1", port: port).wait()
    try server.closeFuture.wait()
}

private final class LoopRelayHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let providerPort: Int
    var upstream: (any Channel)?
    var pending: [HTTPClientRequestPart] = []

    init(providerPort: Int) {
        self.providerPort = providerPort
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            var headers = head.headers
            headers.replaceOrAdd(name: "authorization", value: "Bearer \(fakeProviderKey)")
            headers.replaceOrAdd(name: "host", value: "127.0.0.1:\(providerPort)")
            pending.append(
                .head(
                    HTTPRequestHead(
                        version: .http1_1, method: head.method, uri: String(head.uri.dropFirst("/relay".count)),
                        headers: headers)))
        case .body(let piece):
            pending.append(.body(.byteBuffer(piece)))
        case .end:
            pending.append(.end(nil))
            send(context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstream?.close(promise: nil)
        context.fireChannelInactive()
    }

    private func send(context: ChannelHandlerContext) {
        if let upstream {
            for part in pending { upstream.write(part, promise: nil) }
            upstream.flush()
            pending = []
            return
        }
        let downstream = context.channel
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(LoopRelayBack(downstream: downstream))
                }
            }
            .connect(host: "127.0.0.1", port: providerPort)
            .whenComplete { result in
                let handler = bound.value
                switch result {
                case .success(let channel):
                    handler.upstream = channel
                    for part in handler.pending { channel.write(part, promise: nil) }
                    channel.flush()
                    handler.pending = []
                case .failure:
                    downstream.close(promise: nil)
                }
            }
    }
}

/// Passes the provider's answer back to the caller's connection, on the same loop.
private final class LoopRelayBack: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    let downstream: any Channel

    init(downstream: any Channel) {
        self.downstream = downstream
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            downstream.write(
                HTTPServerResponsePart.head(
                    HTTPResponseHead(version: .http1_1, status: head.status, headers: head.headers)),
                promise: nil)
        case .body(let piece):
            downstream.write(HTTPServerResponsePart.body(.byteBuffer(piece)), promise: nil)
        case .end:
            downstream.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        downstream.close(promise: nil)
        context.fireChannelInactive()
    }
}
