import Foundation
import Hummingbird
import KeyhavenCore

/// `POST /api/integrations/{id}/test` (SPEC §7) and `GET /metrics`.
public struct VerificationController: Sendable {
    let tester: any IntegrationTester
    let limiter: any RateLimiter
    let checks: CheckRateLimit
    let metrics: @Sendable () -> String
    let access: WorkspaceAccess

    /// Creates the controller; `metrics` renders the Prometheus exposition.
    public init(
        tester: any IntegrationTester, limiter: any RateLimiter, checks: CheckRateLimit, access: WorkspaceAccess,
        metrics: @escaping @Sendable () -> String
    ) {
        self.access = access
        self.tester = tester
        self.limiter = limiter
        self.checks = checks
        self.metrics = metrics
    }

    /// Adds the test route to the `/api/integrations` group and `/metrics` to the router.
    public func addRoutes(to group: RouterGroup<UserContext>, router: Router<AppRequestContext>) {
        group.post(":id/test", use: test)
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: metrics())))
        }
    }

    @Sendable func test(_ request: Request, context: UserContext) async throws -> Response {
        // A test changes the integration's status and calls the provider: a write, and a check to pay for.
        try context.require(.integrationsWrite)
        let integration = try await access.integration(try UUID.path(context), .editIntegrations, for: context.user)
        try await checks.count(context.user.id, on: limiter)
        let record = try await tester.testNow(
            id: integration.id, ownerID: integration.ownerID, actor: context.actor(request))
        let language = request.headers[.acceptLanguage]?.lowercased().hasPrefix("es") == true ? "es" : "en"
        return Response.json(status: .ok, TestResultResponse(record: record, language: language))
    }
}
