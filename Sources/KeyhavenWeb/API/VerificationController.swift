import Foundation
import Hummingbird
import KeyhavenCore

/// `POST /api/integrations/{id}/test` (SPEC §7).
public struct VerificationController: Sendable {
    let tester: any IntegrationTester
    let limiter: any RateLimiter
    let checks: CheckRateLimit
    let access: WorkspaceAccess

    /// Creates the controller.
    public init(tester: any IntegrationTester, limiter: any RateLimiter, checks: CheckRateLimit, access: WorkspaceAccess) {
        self.access = access
        self.tester = tester
        self.limiter = limiter
        self.checks = checks
    }

    /// Adds the test route to the `/api/integrations` group.
    public func addRoutes(to group: RouterGroup<UserContext>) {
        group.post(":id/test", use: test)
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
