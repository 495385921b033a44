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
        record(
            RequestRecord.method(request.method), context.endpointPath ?? RequestRecord.unmatched,
            Int(response.status.code),
            start.duration(to: .now))
        return response
    }
}
