import HummingbirdCore
import KeyhavenDatabase
import Logging
import NIOCore

/// HTTP/1.1 connections whose request handling prefers the connection's own event loop as its task executor: the
/// handler's code between suspensions runs on the thread that reads and writes the socket (and, on PostgreSQL,
/// where that loop's database connections answer), instead of hopping to Swift's shared threads and back for every
/// request. Work that must not block a loop never runs here: SQLite's writes run on the writer's thread, bcrypt on
/// its own pool, and the gateway's upstream I/O on NIO's loops.
struct LoopExecutorChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await withTaskExecutorPreference(EventLoopTaskExecutor.of(value.channel.eventLoop)) {
            await base.handle(value: value, logger: logger)
        }
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with `configuration`, each connection handled on its event loop (``LoopExecutorChannel``) when
    /// `onEventLoop`, else on Swift's shared threads (Hummingbird's default).
    static func http1(configuration: HTTP1Channel.Configuration, onEventLoop: Bool) -> HTTPServerBuilder {
        guard onEventLoop else { return .http1(configuration: configuration) }
        return HTTPServerBuilder { responder in
            LoopExecutorChannel(base: HTTP1Channel(responder: responder, configuration: configuration))
        }
    }
}
