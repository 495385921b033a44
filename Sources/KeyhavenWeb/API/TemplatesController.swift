import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices

/// A workspace's integration templates (SPEC §16): `/api/templates?workspace_id=`, `/api/templates/{id}`. Owners and
/// admins write them; anyone who sees the workspace reads them.
public struct TemplatesController: Sendable {
    let service: TemplateService

    /// Creates the controller.
    public init(service: TemplateService) {
        self.service = service
    }

    /// Adds the routes to the `/api/templates` group.
    public func addRoutes(to group: RouterGroup<UserContext>) {
        group.get(use: list)
        group.post(use: create)
        group.get(":id", use: get)
        group.put(":id", use: update)
        group.delete(":id", use: delete)
    }

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        let found = try await service.list(
            in: try WorkspaceParameter.query(request, default: context.user.id), by: context.caller(request))
        return Response.json(
            status: .ok, JSONValue.object(["templates": .array(found.map { TemplateResponse(template: $0).json })]))
    }

    @Sendable func get(_ request: Request, context: UserContext) async throws -> Response {
        let template = try await service.get(
            try UUID.path(context), in: try WorkspaceParameter.query(request, default: context.user.id),
            by: context.caller(request))
        return Response.json(status: .ok, TemplateResponse(template: template))
    }

    @Sendable func create(_ request: Request, context: UserContext) async throws -> Response {
        let workspace = try WorkspaceParameter.query(request, default: context.user.id)
        let template = try await service.create(in: workspace, by: context.caller(request)) { owner in
            let decoded = try await TemplateRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors, ownerID: owner).orThrow()
        }
        return Response.json(status: .created, TemplateResponse(template: template))
    }

    @Sendable func update(_ request: Request, context: UserContext) async throws -> Response {
        let workspace = try WorkspaceParameter.query(request, default: context.user.id)
        let template = try await service.update(try UUID.path(context), in: workspace, by: context.caller(request)) {
            current in
            let decoded = try await TemplateRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors, ownerID: current.ownerID).orThrow()
        }
        return Response.json(status: .ok, TemplateResponse(template: template))
    }

    @Sendable func delete(_ request: Request, context: UserContext) async throws -> Response {
        try await service.delete(
            try UUID.path(context), in: try WorkspaceParameter.query(request, default: context.user.id),
            by: context.caller(request))
        return Response(status: .noContent)
    }
}

/// `POST` and `PUT /api/templates`: `{name, type, name_pattern, config?, rotation?, limits?, allowed_endpoints?}`;
/// a `PUT` replaces the whole template.
struct TemplateRequest: RequestBody {
    static let knownFields: Set<String>? = [
        "name", "type", "name_pattern", "config", "rotation", "limits", "allowed_endpoints",
    ]

    var name: Input<String>?
    var type: Input<String>?
    var namePattern: Input<String>?
    var config: Input<[String: JSONValue]>?
    var rotation: Input<[String: JSONValue]>?
    var limits: Input<[String: JSONValue]>?
    var allowedEndpoints: Input<[String]>?

    enum CodingKeys: String, CodingKey {
        case name, type, config, rotation, limits
        case namePattern = "name_pattern"
        case allowedEndpoints = "allowed_endpoints"
    }

    /// The validated template of `ownerID`, or every problem by field.
    func validated(_ errors: FieldErrors, ownerID: UUID) -> Result<IntegrationTemplate, FieldErrors> {
        var errors = errors
        let name = TextRule.text(name, "name", required: true, maximumLength: 100, errors: &errors)
        let pattern = TextRule.text(namePattern, "name_pattern", required: true, maximumLength: 90, errors: &errors)
        let typeText = TextRule.text(type, "type", required: true, maximumLength: 40, errors: &errors)
        let type = typeText.flatMap(IntegrationType.init(rawValue:))
        if typeText != nil && type == nil { errors["type"] = "must be a provider of GET /api/catalog" }
        var config: [String: JSONValue] = [:]
        if let input = self.config {
            if let object = input.value { config = object } else { errors["config"] = "must be an object" }
        }
        let endpoints = allowedEndpoints.map { $0.value ?? [] } ?? []
        if let input = allowedEndpoints, input.value == nil {
            errors["allowed_endpoints"] = "must be a list of provider paths"
        }
        let limits = Self.limits(self.limits, errors: &errors)
        let policy = type.flatMap { RotationRule.policy(rotation, for: $0, errors: &errors) }
        guard let name, let type else { return .failure(errors) }
        // Checked whole even when the pattern was refused, so that every problem is named at once.
        let template = IntegrationTemplate(
            ownerID: ownerID, name: name, type: type, namePattern: pattern ?? "-", config: config,
            rotation: policy ?? .off, limits: limits, allowedEndpoints: endpoints)
        for (field, problem) in template.problems.all where errors.problem(field) == nil {
            errors.add(problem, to: field)
        }
        return errors.isEmpty && pattern != nil ? .success(template) : .failure(errors)
    }

    /// `limits`: the body of `PUT …/limits` (``LimitsRequest``, the same rules), its problems under `limits.`; nil
    /// when absent, null or empty.
    static func limits(_ input: Input<[String: JSONValue]>?, errors: inout FieldErrors) -> UsageLimits? {
        guard let input else { return nil }
        guard let object = input.value,
            let decoded = try? JSONDecoder().decode(
                LimitsRequest.self, from: Data(JSONValue.object(object).jsonText.utf8))
        else {
            errors["limits"] = "must be an object"
            return nil
        }
        for key in object.keys where !(LimitsRequest.knownFields ?? []).contains(key) {
            errors["limits.\(key)"] = "is not a known field"
        }
        switch decoded.validated(FieldErrors()) {
        case .success(let limits): return limits.isEmpty ? nil : limits
        case .failure(let problems):
            for (field, problem) in problems.all { errors.add(problem, to: "limits.\(field)") }
            return nil
        }
    }
}

/// One template.
struct TemplateResponse: ResponseBody {
    let template: IntegrationTemplate

    var json: JSONValue {
        var limits: JSONValue = .null
        if let set = template.limits {
            limits = .object([
                "monthly_budget_usd": set.monthlyBudgetMicros.map { .number(Double($0) / 1_000_000) } ?? .null,
                "requests_per_minute": set.requestsPerMinute.map { .number(Double($0)) } ?? .null,
                "tokens_per_minute": set.tokensPerMinute.map { .number(Double($0)) } ?? .null,
                "allow_unmetered_endpoints": .bool(set.allowsUnmeteredEndpoints),
            ])
        }
        return .object([
            "id": wireID(template.id), "workspace_id": wireID(template.ownerID), "name": .string(template.name),
            "type": .string(template.type.rawValue), "name_pattern": .string(template.namePattern),
            "config": .object(template.config), "rotation": RotationRule.json(template.rotation), "limits": limits,
            "allowed_endpoints": .array(template.allowedEndpoints.map(JSONValue.string)),
            "created_at": wireDate(template.createdAt), "updated_at": wireDate(template.updatedAt),
        ])
    }
}
