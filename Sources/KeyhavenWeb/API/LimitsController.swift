import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices

/// Budgets and rate limits of an integration (`/api/integrations/{id}/limits`) or a workspace
/// (`/api/limits?workspace_id=`), and this month's spending against them (SPEC §13). Owners and admins set them;
/// anyone who sees the workspace reads them.
public struct LimitsController: Sendable {
    let service: UsageService

    /// Creates the controller.
    public init(service: UsageService) {
        self.service = service
    }

    /// Adds the routes to the `/api/integrations` and `/api/limits` groups.
    public func addRoutes(integrations: RouterGroup<UserContext>, workspaces: RouterGroup<UserContext>) {
        integrations.get(":id/limits", use: integrationLimits)
        integrations.put(":id/limits", use: setIntegrationLimits)
        workspaces.get(use: workspaceLimits)
        workspaces.put(use: setWorkspaceLimits)
    }

    @Sendable func integrationLimits(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        return try await answer(.integration(try UUID.path(context)), request, context)
    }

    @Sendable func setIntegrationLimits(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        return try await set(.integration(try UUID.path(context)), request, context)
    }

    @Sendable func workspaceLimits(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        return try await answer(
            .workspace(try WorkspaceParameter.query(request, default: context.user.id)), request, context)
    }

    @Sendable func setWorkspaceLimits(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        return try await set(
            .workspace(try WorkspaceParameter.query(request, default: context.user.id)), request, context)
    }

    private func answer(
        _ subject: UsageService.Subject, _ request: Request, _ context: UserContext
    ) async throws -> Response {
        let standing = try await service.standing(of: subject, by: context.caller(request))
        return Response.json(status: .ok, LimitsResponse(standing: standing))
    }

    private func set(_ subject: UsageService.Subject, _ request: Request, _ context: UserContext) async throws
        -> Response
    {
        let standing = try await service.setLimits(of: subject, by: context.caller(request)) { _ in
            let decoded = try await LimitsRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors).orThrow()
        }
        return Response.json(status: .ok, LimitsResponse(standing: standing))
    }
}

/// `PUT …/limits`: `{monthly_budget_usd, requests_per_minute, tokens_per_minute}`, each a number or null (no limit);
/// an absent field is no limit too, since the body replaces the limits. `allow_unmetered_endpoints` (default false)
/// lets the gateway forward endpoints it cannot meter despite a budget or token limit.
package struct LimitsRequest: RequestBody {
    static let knownFields: Set<String>? = [
        "monthly_budget_usd", "requests_per_minute", "tokens_per_minute", "allow_unmetered_endpoints",
    ]

    var monthlyBudgetUSD: Input<Double>?
    var requestsPerMinute: Input<Double>?
    var tokensPerMinute: Input<Double>?
    var allowUnmeteredEndpoints: Input<Bool>?

    enum CodingKeys: String, CodingKey {
        case monthlyBudgetUSD = "monthly_budget_usd"
        case requestsPerMinute = "requests_per_minute"
        case tokensPerMinute = "tokens_per_minute"
        case allowUnmeteredEndpoints = "allow_unmetered_endpoints"
    }

    package init(
        monthlyBudgetUSD: Input<Double>?, requestsPerMinute: Input<Double>?, tokensPerMinute: Input<Double>?,
        allowUnmeteredEndpoints: Input<Bool>? = nil
    ) {
        self.monthlyBudgetUSD = monthlyBudgetUSD
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.allowUnmeteredEndpoints = allowUnmeteredEndpoints
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        monthlyBudgetUSD = try container.decodeIfPresent(Input<Double>.self, forKey: .monthlyBudgetUSD)
        requestsPerMinute = try container.decodeIfPresent(Input<Double>.self, forKey: .requestsPerMinute)
        tokensPerMinute = try container.decodeIfPresent(Input<Double>.self, forKey: .tokensPerMinute)
        // Null is no limit for the numbers, but not a choice for the switch: present, it must be true or false
        // (`decodeIfPresent` would read null as absent).
        if container.contains(.allowUnmeteredEndpoints) {
            allowUnmeteredEndpoints = try container.decode(Input<Bool>.self, forKey: .allowUnmeteredEndpoints)
        }
    }

    package func validated(_ errors: FieldErrors) -> Result<UsageLimits, FieldErrors> {
        var errors = errors
        var limits = UsageLimits()
        // `Input` decodes null as invalid, so null and absent are told apart by the value only.
        func value(_ input: Input<Double>?) -> Double?? {
            guard let input else { return .some(nil) }
            return input.value.map { .some($0) } ?? nil
        }
        switch value(monthlyBudgetUSD) {
        case .some(nil): break
        case .some(let dollars?) where dollars >= 0 && dollars <= 1_000_000_000:
            limits.monthlyBudgetMicros = Int64((dollars * 1_000_000).rounded())
        default: errors["monthly_budget_usd"] = "must be a number of dollars from 0 to 1000000000, or null"
        }
        for (input, name, maximum, keyPath) in [
            (requestsPerMinute, "requests_per_minute", 1e9, \UsageLimits.requestsPerMinute),
            (tokensPerMinute, "tokens_per_minute", 1e12, \UsageLimits.tokensPerMinute),
        ] {
            switch value(input) {
            case .some(nil): break
            case .some(let count?) where count.rounded() == count && count >= 1 && count <= maximum:
                limits[keyPath: keyPath] = Int64(count)
            default: errors[name] = "must be a whole number from 1 to \(Int64(maximum)), or null"
            }
        }
        if let allowUnmeteredEndpoints {
            if let allowed = allowUnmeteredEndpoints.value {
                limits.allowsUnmeteredEndpoints = allowed
            } else {
                errors["allow_unmetered_endpoints"] = "must be true or false"
            }
        }
        return errors.problems.isEmpty ? .success(limits) : .failure(errors)
    }
}

/// The limits and this month's spending.
struct LimitsResponse: ResponseBody {
    let standing: Budgets.Standing

    var json: JSONValue {
        let limits = standing.limits
        func count(_ value: Int64?) -> JSONValue { value.map { .number(Double($0)) } ?? .null }
        return .object([
            "monthly_budget_usd": wireDollars(limits.monthlyBudgetMicros),
            "requests_per_minute": count(limits.requestsPerMinute),
            "tokens_per_minute": count(limits.tokensPerMinute),
            "allow_unmetered_endpoints": .bool(limits.allowsUnmeteredEndpoints),
            "spent_this_month_usd": wireDollars(standing.spentMicros),
            "budget_used_percent": count(standing.percent),
            "warning": .bool(standing.warning),
        ])
    }
}
