import Hummingbird

/// Logs each request once it has been answered: its method, the route it matched and the status.
///
/// The route is the pattern (`/gateway/{id}/**`, `/api/integrations/{id}`), never the path the client sent: a path
/// holds integration ids (the gateway's) and whatever a client put there, and a query may carry a caller's key
/// (Gemini's `?key=`). A request that matched no route is logged as `unmatched`. Nothing a client chose reaches
/// the line but the method, and only the standard ones are named.
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
        let method =
            RequestMetricsMiddleware<Context>.methods.contains(request.method) ? request.method.rawValue : "OTHER"
        context.logger.info(
            "Request",
            metadata: [
                "hb.request.route": .string(Self.route(context.endpointPath)), "hb.request.method": .string(method),
                "hb.response.status": .stringConvertible(status),
            ])
    }

    /// The route pattern as logged: the matched one, or `unmatched`.
    static func route(_ endpointPath: String?) -> String { endpointPath ?? "unmatched" }
}
