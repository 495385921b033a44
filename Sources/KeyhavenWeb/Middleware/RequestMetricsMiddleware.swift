import Hummingbird

/// Counts requests and their durations by method, route template (`/api/integrations/{id}`, never an id) and
/// status, for `GET /metrics` (SPEC §6).
public struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Receives one finished request: method, route, status code, duration.
    public typealias Recorder = @Sendable (String, String, Int, Duration) -> Void

    let record: Recorder

    public init(record: @escaping Recorder) {
        self.record = record
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let start = ContinuousClock.now
        let response = try await next(request, context)
        // A client may send any method token: only the standard ones become labels, so labels stay a small set.
        let method = Self.methods.contains(request.method) ? request.method.rawValue : "OTHER"
        record(method, context.endpointPath ?? "unmatched", Int(response.status.code), start.duration(to: .now))
        return response
    }

    static var methods: Set<HTTPRequest.Method> { [.get, .head, .post, .put, .patch, .delete, .options] }
}
