import KeyhavenDatabase
import KeyhavenWeb
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The second server of `KEYHAVEN_GATEWAY_ADDRESS`: the gateway alone, as NIO handlers on the event loops of the
/// main server's group (``GatewayListener``), started and stopped with the main server. On SIGTERM it stops taking
/// connections, closes the idle ones, lets the answers in progress end (each connection then closes) and returns
/// once every connection has closed, before the usage recorder writes what is queued.
struct GatewayListenerService: Service {
    let listener: GatewayListener
    let address: KeyhavenConfiguration.ListenAddress
    let logger: Logger
    /// Told the bound address once the listener takes connections.
    let onRunning: @Sendable (SocketAddress) async -> Void

    /// The main server's group (Hummingbird's default).
    var group: any EventLoopGroup { MultiThreadedEventLoopGroup.singleton }

    func run() async throws {
        let quiescing = ServerQuiescingHelper(group: group)
        let listener = self.listener
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try listener.configure(channel) }
            }
            .bind(host: address.host, port: address.port).get()
        let bound = channel.localAddress
        logger.info(
            "Gateway listener started and listening on \(address.host):\(bound?.port ?? address.port)")
        if let bound { await onRunning(bound) }
        let cancelled = (try? await gracefulShutdown()) == nil
        let stopped = channel.eventLoop.makePromise(of: Void.self)
        quiescing.initiateShutdown(promise: stopped)
        // Cancelled, the process is going away: nothing is waited for.
        if !cancelled { try? await stopped.futureResult.get() }
    }
}

/// The gateway's own listener over the runtime: the public port's exchange, deadlines, header limits, security
/// headers and metrics; each request's task prefers its connection's event loop as its executor.
func gatewayListener(_ runtime: KeyhavenRuntime) -> GatewayListener {
    let configuration = runtime.configuration
    let decoder = deadlined(configuration).httpDecoder
    var limits = NIOHTTPDecoderLimitConfiguration()
    limits.maxHeaderFieldSize = decoder.maxHeaderFieldSize
    limits.maxHeaderListSize = decoder.maxHeaderListSize
    limits.maxHeaderFieldCount = decoder.maxHeaderFieldCount
    return GatewayListener(
        exchange: runtime.gatewayExchange, strictTransportSecurity: configuration.isHTTPS,
        headTimeout: configuration.headDeadline, bodyTimeout: configuration.bodyDeadline, decoderLimits: limits,
        logger: runtime.logger, recordRequest: runtime.metrics.recordRequest,
        executor: { EventLoopTaskExecutor.of($0) })
}
