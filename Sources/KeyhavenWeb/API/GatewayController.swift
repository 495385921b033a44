import HTTPTypes
import Hummingbird
import KeyhavenCore
import KeyhavenServices

/// `/gateway/{integration_id}/<provider path>` and `/gateway/route/{name}/<provider path>` on the public port
/// (SPEC §13): the router's front end of ``GatewayExchange``, which decides everything; this passes the request in
/// and its answer (or error) out. The gateway's own listener (``GatewayListener``) is the other front end.
public struct GatewayController: Sendable {
    let exchange: GatewayExchange

    /// Creates the controller over the exchange.
    public init(exchange: GatewayExchange) {
        self.exchange = exchange
    }

    /// Adds the gateway's routes.
    public func addRoutes(to router: Router<AppRequestContext>) {
        for method in GatewayExchange.methods {
            router.on("/gateway/:id/**", method: method, use: forward)
            router.on("/gateway/route/:name/**", method: method, use: forward)
        }
    }

    /// A thrown error becomes the JSON error body in ``ErrorMiddleware``, by ``ErrorAnswer/answering(_:logger:)``,
    /// as on the listener.
    @Sendable func forward(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let target = GatewayExchange.Target(path: request.uri.path) else { throw KeyhavenError.notFound }
        let call = GatewayExchange.Call(
            method: request.method, path: request.uri.path, query: request.uri.query, headers: request.headers)
        let answer = try await exchange.answer(call, to: target, body: request.body, eventLoop: context.eventLoop)
        switch answer.body {
        case .whole(let body):
            return Response(
                status: answer.status, headers: answer.headers, body: Hummingbird.ResponseBody(byteBuffer: body))
        case .relayed(let relay):
            // A relay that broke off throws out of the body: the server then closes the connection, so the caller
            // cannot take a cut answer for a whole one.
            return Response(
                status: answer.status, headers: answer.headers,
                body: Hummingbird.ResponseBody(contentLength: relay.contentLength) { writer in
                    try await relay.relay(
                        write: { try await writer.write($0) }, finish: { try await writer.finish(nil) })
                })
        }
    }
}
