import Hummingbird
import Logging

/// Logs each request once it has been answered: its method, the route it matched and the status.
///
/// The route is the pattern (`/gateway/{id}/**`, `/api/integrations/{id}`), never the path the client sent: a path
/// holds integration ids (the gateway's) and whatever a client put there, and a query may carry a caller's key
/// (Gemini's `?key=`). A request that matched no route is logged as `NotFound` (``RequestRecord/unmatched``).
/// Nothing a client chose reaches the line but the method, and only the standard ones are named.
public struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Creates the middleware.
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        do {
            let response = try await next(request, context)
            log(request, context: context, status: Int(response.status.code))
            return response
        } catch {
            log(request, context: context, status: Int((error as? any HTTPResponseError)?.status.code ?? 500))
            throw error
        }
    }

    private func log(_ request: Request, context: Context, status: Int) {
        RequestRecord.log(
            context.logger, method: RequestRecord.method(request.method), route: Self.route(context.endpointPath),
            status: status)
    }

    /// The route pattern as logged: the matched one, or ``RequestRecord/unmatched``.
    static func route(_ endpointPath: String?) -> String { endpointPath ?? RequestRecord.unmatched }
}

/// What a finished request is logged and counted as, the same for the router and the gateway's own listener.
public enum RequestRecord {
    /// The method as a label: the standard ones by name, any other token a client may send as `OTHER`, so labels
    /// and log lines stay a small set.
    public static func method(_ method: HTTPRequest.Method) -> String {
        methods.contains(method) ? method.rawValue : "OTHER"
    }

    static let methods: Set<HTTPRequest.Method> = [.get, .head, .post, .put, .patch, .delete, .options]

    /// The route of a request no route matched: the router's own name for it, so both of the gateway's servers
    /// count and log such requests alike.
    public static let unmatched = "NotFound"

    /// The request's log line: its method, route pattern and status, nothing the client chose.
    public static func log(_ logger: Logger, method: String, route: String, status: Int) {
        logger.info(
            "Request",
            metadata: [
                "hb.request.route": .string(route), "hb.request.method": .string(method),
                "hb.response.status": .stringConvertible(status),
            ])
    }
}
