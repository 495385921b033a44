import Hummingbird

/// Logs each request's method and path, never its query: a query may carry a caller's key (Gemini's `?key=`),
/// and nothing secret reaches a log line.
public struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Creates the middleware.
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        context.logger.info(
            "Request",
            metadata: [
                "hb.request.path": .string(request.uri.path), "hb.request.method": .string(request.method.rawValue),
            ])
        return try await next(request, context)
    }
}
