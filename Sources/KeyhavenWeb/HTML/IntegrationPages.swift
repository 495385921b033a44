import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway

/// The integrations list, the new-integration form and an integration's detail page.
struct IntegrationPages: Sendable {
    let services: WebPages.Services
    let renderer: PageRenderer

    /// Flash messages a redirect may name (`?done=created`), so nothing but these texts can be shown that way.
    static let nameTaken = "is already the name of another of your integrations"

    static let flashes = [
        "created", "replaced", "renamed", "enabled", "disabled", "deleted", "rotation_saved", "rotation_started", "joined",
        "limits_saved", "limits_invalid",
    ]

    // MARK: List

    @Sendable func list(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let workspace = try Self.workspace(request.uri.queryParameters["workspace"].map(String.init), viewer: viewer)
        let role = try await services.access.require(.view, in: workspace, for: viewer.user)
        let canEdit = WorkspaceAccess.allows(role, .editIntegrations, in: workspace)
        let cursor = request.uri.queryParameters["cursor"].flatMap { Cursor.decode(String($0)) }
        let found = try await services.integrations.list(ownerID: workspace, limit: 101, after: cursor)
        let shown = Array(found.prefix(100))
        let listPath = Self.listPath(workspace, viewer: viewer)
        let separator = listPath.contains("?") ? "&" : "?"
        let warned = try await budgetWarnings(shown)
        var values: [String: Any] = [
            "cards": shown.map { integration in
                var card = Self.card(integration, language: page.language, canEdit: canEdit)
                card["budget_warning"] = warned.contains(integration.id)
                return card
            },
            "empty": shown.isEmpty && cursor == nil,
            "nav_integrations": true,
            "workspace_id": Self.idText(workspace),
            "workspace_name": viewer.workspaceName(workspace, language: page.language) ?? "",
            "can_edit": canEdit,
            "new_path": workspace == viewer.user.id ? "/integrations/new" : "/integrations/new?workspace=\(Self.idText(workspace))",
        ]
        if workspace != viewer.user.id {
            values["organization"] = ["id": Self.idText(workspace), "role": page.language.text("role_\(role.rawValue)")]
        }
        if found.count > 100, let last = shown.last { values["next_page"] = "\(listPath)\(separator)cursor=\(Cursor.encode(last.id))" }
        if cursor != nil { values["first_page"] = listPath }
        values["flash"] = Self.flash(request, language: page.language)
        return renderer.page(
            "integrations", title: page.language.text("integrations_title"), values: values, language: page.language,
            viewer: viewer, path: page.path)
    }

    /// Which of `integrations` have spent at least the warning share of their monthly budget: one query for the
    /// limits, then one per integration that has a budget.
    private func budgetWarnings(_ integrations: [Integration]) async throws -> Set<UUID> {
        let limits = try await services.limits.limits(for: integrations.map(\.id))
        var warned: Set<UUID> = []
        for integration in integrations where limits[integration.id]?.monthlyBudgetMicros != nil {
            let standing = try await services.budgets.standing(subject: integration.id, ownerID: integration.ownerID)
            if standing.warning { warned.insert(integration.id) }
        }
        return warned
    }

    @Sendable func card(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let (integration, role) = try await integration(context, viewer, .view)
        let canEdit = WorkspaceAccess.allows(role, .editIntegrations, in: integration.ownerID)
        return renderer.fragment(
            "card", values: Self.card(integration, language: page.language, canEdit: canEdit), language: page.language,
            viewer: viewer)
    }

    /// The integration of the path, if the reader may take `action` on it, with their role in its workspace.
    private func integration(
        _ context: AppRequestContext, _ viewer: Viewer, _ action: Policy.Action
    ) async throws -> (integration: Integration, role: WorkspaceRole) {
        try await services.access.integrationAndRole(try UUID.path(context), action, for: viewer.user)
    }

    /// The workspace a list or a form is for (`?workspace=`, or a form's `workspace` field): the reader's personal
    /// one when absent; anything that is not an id is not found.
    static func workspace(_ text: String?, viewer: Viewer) throws -> UUID {
        guard let text, !text.isEmpty else { return viewer.user.id }
        guard let id = UUID(text: text) else { throw KeyhavenError.notFound }
        return id
    }

    /// The form value that keeps an organization's workspace across the new-integration pages (none for the
    /// personal one, whose links stay as they were).
    static func workspaceField(_ workspace: UUID, viewer: Viewer) -> [String: String] {
        workspace == viewer.user.id ? [:] : ["workspace": idText(workspace)]
    }

    /// The integrations list of a workspace, with a flash message to show (`done`) if given.
    static func listPath(_ workspace: UUID, viewer: Viewer, done: String? = nil) -> String {
        let path = workspace == viewer.user.id ? "/integrations" : "/integrations?workspace=\(idText(workspace))"
        guard let done else { return path }
        return path + (path.contains("?") ? "&" : "?") + "done=\(done)"
    }

    // MARK: New integration

    @Sendable func newForm(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let type = request.uri.queryParameters["type"].flatMap { IntegrationType(rawValue: String($0)) }
        let workspace = try Self.workspace(request.uri.queryParameters["workspace"].map(String.init), viewer: viewer)
        _ = try await services.access.require(.editIntegrations, in: workspace, for: viewer.user)
        return newPage(type: type, values: Self.workspaceField(workspace, viewer: viewer), errors: [:], page: page, viewer: viewer)
    }

    @Sendable func create(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let workspace = try Self.workspace(form["workspace"], viewer: viewer)
        _ = try await services.access.require(.editIntegrations, in: workspace, for: viewer.user)
        guard let type = form["type"].flatMap(IntegrationType.init(rawValue:)) else {
            return newPage(
                type: nil, values: Self.workspaceField(workspace, viewer: viewer), errors: [:], page: page, viewer: viewer,
                status: .unprocessableContent)
        }
        let kept = Self.keptValues(form).merging(Self.workspaceField(workspace, viewer: viewer)) { $1 }
        var input = CredentialsForm(type: type, form: form)
        let name = Self.validName(form["name"])
        if name == nil { input.errors["name"] = "must be a non-empty string of at most 100 visible characters" }
        guard input.errors.isEmpty, let name, let credentials = input.credentials else {
            return newPage(type: type, values: kept, errors: input.errors, page: page, viewer: viewer, status: .unprocessableContent)
        }
        do {
            try await services.checks.count(viewer.user.id, on: services.limiter)
            _ = try await services.integrations.create(
                ownerID: workspace, name: name, type: type, config: input.config, credentials: credentials,
                actor: Self.actor(request, context: context, viewer: viewer))
        } catch KeyhavenError.rateLimited(let seconds) {
            var response = newPage(
                type: type, values: kept, errors: [:], page: page, viewer: viewer, status: .tooManyRequests,
                message: page.language.text("rate_limited"))
            response.headers[.retryAfter] = String(seconds)
            return response
        } catch KeyhavenError.conflict {
            return newPage(type: type, values: kept, errors: ["name": Self.nameTaken], page: page, viewer: viewer, status: .conflict)
        }
        return Response.redirect(to: Self.listPath(workspace, viewer: viewer, done: "created"), type: .normal)
    }

    private func newPage(
        type: IntegrationType?, values: [String: String], errors: [String: String], page: PageRequest, viewer: Viewer,
        status: HTTPResponse.Status = .ok, message: String? = nil
    ) -> Response {
        var context: [String: Any] = ["nav_integrations": true, "values": values]
        context["workspace_id"] = values["workspace"] ?? Self.idText(viewer.user.id)
        context["providers"] = IntegrationType.allCases.map { option in
            [
                "type": option.rawValue, "label": page.language.text("type_\(option.rawValue)"),
                "description": page.language.text("desc_\(option.rawValue)"), "mark": Self.mark(option),
            ] as [String: Any]
        }
        if let type {
            context["chosen"] = Self.providerFields(type, language: page.language)
            context["errors"] = errors.mapValues { page.language.problem($0) }
            if !errors.isEmpty || message != nil { context["form_error"] = message ?? page.language.text("fix_errors") }
        }
        return renderer.page(
            "new", title: page.language.text("new_integration"), values: context, language: page.language, viewer: viewer,
            path: page.path, status: status)
    }

    // MARK: Detail

    @Sendable func detail(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let (integration, role) = try await integration(context, viewer, .view)
        return try await detailPage(
            integration, role: role, request: request, page: page, viewer: viewer,
            extra: ["flash": Self.flash(request, language: page.language) as Any])
    }

    @Sendable func test(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let (tested, role) = try await integration(context, viewer, .editIntegrations)
        try await services.checks.count(viewer.user.id, on: services.limiter)
        let record = try await services.tester.testNow(
            id: tested.id, ownerID: tested.ownerID, actor: Self.actor(request, context: context, viewer: viewer))
        let integration = try await services.integrations.get(id: tested.id, ownerID: tested.ownerID)
        let latency = record.latency.components.seconds * 1000 + record.latency.components.attoseconds / 1_000_000_000_000_000
        let result: [String: Any] = [
            "status": record.outcome.status.rawValue,
            "status_label": page.language.label(record.outcome.status),
            "message": record.outcome == .connected
                ? record.outcome.message(language: page.language.rawValue)
                : Self.errorMessage(record.errorMessage, language: page.language) ?? "",
            "latency_ms": latency,
            "details": record.details.keys.sorted().map { key in
                ["label": Self.detailLabel(key, language: page.language), "value": Self.text(record.details[key])]
            },
        ]
        return try await detailPage(integration, role: role, request: request, page: page, viewer: viewer, extra: ["result": result])
    }

    @Sendable func replace(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (current, role) = try await integration(context, viewer, .editIntegrations)
        let id = current.id
        let input = CredentialsForm(type: current.type, form: form)
        guard input.errors.isEmpty, let credentials = input.credentials else {
            return try await detailPage(
                current, role: role, request: request, page: page, viewer: viewer,
                extra: ["errors": input.errors.mapValues { page.language.problem($0) }, "replace_failed": true,
                        "values": Self.keptValues(form)],
                status: .unprocessableContent)
        }
        var changes = IntegrationChanges()
        changes.credentials = credentials
        changes.config = input.config
        try await services.checks.count(viewer.user.id, on: services.limiter)
        _ = try await services.integrations.update(
            id: id, ownerID: current.ownerID, changes: changes, actor: Self.actor(request, context: context, viewer: viewer))
        return Response.redirect(to: "/integrations/\(Self.idText(id))?done=replaced", type: .normal)
    }

    @Sendable func rename(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (current, role) = try await integration(context, viewer, .editIntegrations)
        let id = current.id
        guard let name = Self.validName(form["name"]) else {
            return try await detailPage(
                current, role: role, request: request, page: page, viewer: viewer,
                extra: ["rename_error": page.language.problem("must be a non-empty string of at most 100 visible characters")],
                status: .unprocessableContent)
        }
        var changes = IntegrationChanges()
        changes.name = name
        do {
            _ = try await services.integrations.update(
                id: id, ownerID: current.ownerID, changes: changes, actor: Self.actor(request, context: context, viewer: viewer))
        } catch KeyhavenError.conflict {
            return try await detailPage(
                current, role: role, request: request, page: page, viewer: viewer, extra: ["rename_error": page.language.problem(Self.nameTaken)],
                status: .conflict)
        }
        return Response.redirect(to: "/integrations/\(Self.idText(id))?done=renamed", type: .normal)
    }

    @Sendable func enable(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        try await setEnabled(true, request: request, context: context, viewer: viewer)
    }

    @Sendable func disable(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        try await setEnabled(false, request: request, context: context, viewer: viewer)
    }

    private func setEnabled(_ enabled: Bool, request: Request, context: AppRequestContext, viewer: Viewer) async throws -> Response {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let (current, _) = try await integration(context, viewer, .editIntegrations)
        let id = current.id
        if enabled && !current.enabled { try await services.checks.count(viewer.user.id, on: services.limiter) }
        var changes = IntegrationChanges()
        changes.enabled = enabled
        _ = try await services.integrations.update(
            id: id, ownerID: current.ownerID, changes: changes, actor: Self.actor(request, context: context, viewer: viewer))
        return Response.redirect(to: "/integrations/\(Self.idText(id))?done=\(enabled ? "enabled" : "disabled")", type: .normal)
    }

    @Sendable func setRotation(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (current, role) = try await integration(context, viewer, .editIntegrations)
        let id = current.id
        var errors: [String: String] = [:]
        let mode = form["mode"].flatMap(RotationPolicy.Mode.init(rawValue:))
        if mode == nil { errors["rotation.mode"] = "must be off, remind or automatic" }
        let everyDays = Int(form.trimmed("every_days") ?? "90")
        if everyDays == nil { errors["rotation.every_days"] = "must be a whole number of days from 1 to 3650" }
        let graceHours = Int(form.trimmed("grace_hours") ?? "24")
        if graceHours == nil { errors["rotation.grace_hours"] = "must be a whole number of hours from 0 to 720" }
        if let mode, let everyDays, let graceHours {
            do {
                _ = try await services.rotations.setPolicy(
                    RotationPolicy(mode: mode, everyDays: everyDays, graceHours: graceHours), id: id, ownerID: current.ownerID,
                    actor: Self.actor(request, context: context, viewer: viewer))
                return Response.redirect(to: "/integrations/\(Self.idText(id))?done=rotation_saved", type: .normal)
            } catch KeyhavenError.validationFailed(let problems) {
                errors = problems
            }
        }
        return try await detailPage(
            current, role: role, request: request, page: page, viewer: viewer,
            extra: ["rotation_errors": Dictionary(uniqueKeysWithValues: errors.map { (String($0.key.dropFirst("rotation.".count)), page.language.problem($0.value)) })],
            status: .unprocessableContent)
    }

    @Sendable func rotate(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let (current, role) = try await integration(context, viewer, .editIntegrations)
        let id = current.id
        do {
            try await services.checks.count(viewer.user.id, on: services.limiter)
            _ = try await services.rotations.request(
                id: id, ownerID: current.ownerID, actor: Self.actor(request, context: context, viewer: viewer), now: Date())
        } catch KeyhavenError.conflict(let message) {
            return try await detailPage(
                current, role: role, request: request, page: page, viewer: viewer, extra: ["rotation_refused": message], status: .conflict)
        }
        return Response.redirect(to: "/integrations/\(Self.idText(id))?done=rotation_started", type: .normal)
    }

    @Sendable func deletePage(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let (integration, _) = try await integration(context, viewer, .editIntegrations)
        return deleteConfirmation(integration, page: page, viewer: viewer, error: nil)
    }

    @Sendable func delete(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let (integration, _) = try await integration(context, viewer, .editIntegrations)
        guard form["confirm_name"]?.trimmingCharacters(in: .whitespacesAndNewlines) == integration.name else {
            return deleteConfirmation(integration, page: page, viewer: viewer, error: page.language.text("delete_confirm_mismatch"))
        }
        try await services.integrations.delete(
            id: integration.id, ownerID: integration.ownerID, actor: Self.actor(request, context: context, viewer: viewer))
        return Response.redirect(to: Self.listPath(integration.ownerID, viewer: viewer, done: "deleted"), type: .normal)
    }

    private func deleteConfirmation(_ integration: Integration, page: PageRequest, viewer: Viewer, error: String?) -> Response {
        var values: [String: Any] = [
            "integration": Self.card(integration, language: page.language, canEdit: true), "nav_integrations": true,
            "workspace_id": Self.idText(integration.ownerID),
        ]
        if let error { values["confirm_error"] = error }
        return renderer.page(
            "delete", title: page.language.text("delete_title"), values: values, language: page.language, viewer: viewer,
            path: page.path, status: error == nil ? .ok : .unprocessableContent)
    }

    private func detailPage(
        _ integration: Integration, role: WorkspaceRole, request: Request, page: PageRequest, viewer: Viewer,
        extra: [String: Any], status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let owner = SecretOwner(integrationID: integration.id, ownerID: integration.ownerID)
        let versions = try await services.secrets.versions(of: owner)
        let events = try await services.audit.events(
            ownerID: integration.ownerID, integrationID: integration.id, limit: 20, before: nil)
        let canEdit = WorkspaceAccess.allows(role, .editIntegrations, in: integration.ownerID)
        var values = extra
        values["nav_integrations"] = true
        values["can_edit"] = canEdit
        values["workspace_id"] = Self.idText(integration.ownerID)
        values["list_path"] = Self.listPath(integration.ownerID, viewer: viewer)
        values["integration"] = Self.card(integration, language: page.language, canEdit: canEdit)
        values["fields"] = Self.providerFields(integration.type, language: page.language)
        var kept = (extra["values"] as? [String: String]) ?? [:]
        for (key, value) in integration.config { if kept[key] == nil, let text = value.stringValue { kept[key] = text } }
        values["values"] = kept
        values["versions"] = versions.map { version in
            [
                "version": version.version, "created": page.language.relative(version.createdAt),
                "created_iso": Self.iso(version.createdAt), "current": version.version == integration.credentialVersion,
            ] as [String: Any]
        }
        values["events"] = events.map { AccountPages.event($0, names: [integration.id: integration.name], language: page.language) }
        let rotations = try await services.rotations.rotations(
            integrationID: integration.id, ownerID: integration.ownerID, limit: 10)
        values["rotation"] = Self.rotation(integration, rotations: rotations, language: page.language)
        if Gateway.providers.contains(integration.type) {
            let (from, to) = try UsageController.period(from: nil, to: nil)
            var usage = try await UsagePages(services: services, renderer: renderer).panel(
                ownerID: integration.ownerID, integrationID: integration.id, from: from, to: to, language: page.language)
            usage["can_set_limits"] = WorkspaceAccess.allows(role, .manageBudgets, in: integration.ownerID)
            usage["integration_id"] = Self.idText(integration.id)
            values["usage"] = usage
        }
        return renderer.page(
            "detail", title: integration.name, values: values, language: page.language, viewer: viewer, path: page.path,
            status: status)
    }

    // MARK: View values

    /// The values of an integration's card; `canEdit` shows the controls that change it. Never a credential: the
    /// hint only.
    static func card(_ integration: Integration, language: Language, canEdit: Bool) -> [String: Any] {
        var card: [String: Any] = [
            "id": idText(integration.id),
            "can_edit": canEdit,
            "name": integration.name,
            "type": integration.type.rawValue,
            "type_label": language.text("type_\(integration.type.rawValue)"),
            "mark": mark(integration.type),
            "status": integration.status.rawValue,
            "status_label": language.label(integration.status),
            "verifying": integration.status == .verifying,
            "enabled": integration.enabled,
            "last_verified": integration.lastVerifiedAt.map { language.relative($0) } ?? language.text("never"),
            "last_used": integration.lastUsedAt.map { language.relative($0) } ?? language.text("never"),
            "version": integration.credentialVersion,
            "rotation_due": integration.rotationDue(),
        ]
        if let hint = integration.credentialHint { card["hint"] = hint }
        if let problem = integration.retireError { card["retire_error"] = problem }
        if let date = integration.lastVerifiedAt { card["last_verified_iso"] = iso(date) }
        if let date = integration.lastUsedAt { card["last_used_iso"] = iso(date) }
        if integration.status == .error, let message = errorMessage(integration.errorMessage, language: language) {
            card["error"] = message
        }
        return card
    }

    /// The rotation section of the detail page: the policy form, the button, and the recent rotations.
    static func rotation(_ integration: Integration, rotations: [RotationRecord], language: Language) -> [String: Any] {
        let automatic = RotationPolicy.automaticTypes.contains(integration.type)
        let modes: [RotationPolicy.Mode] = automatic ? [.off, .remind, .automatic] : [.off, .remind]
        let running = rotations.first.map { !$0.state.isFinished } ?? false
        return [
            "modes": modes.map { mode in
                ["value": mode.rawValue, "label": language.text("mode_\(mode.rawValue)"), "selected": mode == integration.rotation.mode] as [String: Any]
            },
            "every_days": integration.rotation.everyDays,
            "grace_hours": integration.rotation.graceHours,
            "can_rotate": automatic && integration.enabled && !running,
            "running": running,
            "has_history": !rotations.isEmpty,
            "history": rotations.map { record in
                var row: [String: Any] = [
                    "started": language.relative(record.createdAt), "started_iso": iso(record.createdAt),
                    "state": record.state.rawValue, "state_label": language.text("rotation_\(record.state.rawValue)"),
                ]
                if let error = record.error { row["error"] = error }
                return row
            },
        ]
    }

    /// The stored error message, its opening sentence (the outcome's) in the reader's language.
    static func errorMessage(_ message: String?, language: Language) -> String? {
        guard let message else { return nil }
        for outcome in VerificationOutcome.allCases where message.hasPrefix(outcome.message(language: "en")) {
            return outcome.message(language: language.rawValue) + message.dropFirst(outcome.message(language: "en").count)
        }
        return message
    }

    /// The provider's mark: its initials, beside its name (so never the only cue).
    static func mark(_ type: IntegrationType) -> String {
        switch type {
        case .openai: "AI"
        case .googleCloud: "GC"
        case .aws: "AWS"
        case .azure: "Az"
        case .anthropic: "An"
        case .gemini: "Ge"
        }
    }

    /// Which fields the provider's form shows.
    static func providerFields(_ type: IntegrationType, language: Language) -> [String: Any] {
        [
            "type": type.rawValue, "label": language.text("type_\(type.rawValue)"), "mark": mark(type),
            "is_key": [.openai, .anthropic, .gemini].contains(type), "is_openai": type == .openai,
            "is_google": type == .googleCloud, "is_aws": type == .aws, "is_azure": type == .azure,
        ]
    }

    static func flash(_ request: Request, language: Language) -> String? {
        guard let done = request.uri.queryParameters["done"].map(String.init), flashes.contains(done) else { return nil }
        return language.text("\(done)_flash")
    }

    /// The fields a failed form shows again: never a secret.
    static func keptValues(_ form: Form) -> [String: String] {
        var kept: [String: String] = [:]
        for field in ["name", "organization", "project", "access_key_id", "region", "tenant_id", "client_id"] {
            if let value = form[field] { kept[field] = value }
        }
        return kept
    }

    /// A name by the API's rules (`TextRule`): at most 100 code points, nothing invisible or controlling, not blank.
    static func validName(_ text: String?) -> String? {
        guard let raw = text, raw.unicodeScalars.count <= 100, !raw.unicodeScalars.contains(where: { TextRule.isRefused($0) })
        else { return nil }
        let trimmed = raw.trimmingCharacters(in: .whitespaces)
        return trimmed.isEmpty ? nil : trimmed
    }

    static func detailLabel(_ key: String, language: Language) -> String {
        switch key {
        case "account_id": language.text("account")
        case "arn": language.text("arn")
        case "model_count": language.text("models")
        case "tenant_id": language.text("tenant_id")
        case "client_email": language.text("email")
        default: key
        }
    }

    static func text(_ value: JSONValue?) -> String {
        switch value {
        case .string(let text)?: text
        case .number(let number)? where number == number.rounded() && abs(number) < 1e15: String(Int64(number))
        case .number(let number)?: String(number)
        case .bool(let flag)?: String(flag)
        default: ""
        }
    }

    static func actor(_ request: Request, context: AppRequestContext, viewer: Viewer) -> AuditActor {
        AuditActor(kind: .user, id: idText(viewer.user.id), ip: context.clientAddress, userAgent: request.headers[.userAgent])
    }

    static func idText(_ id: UUID) -> String { id.lowercasedText }

    static func iso(_ date: Date) -> String { date.formatted(Date.ISO8601FormatStyle()) }
}

/// A provider's credential fields from a form, turned into the API's shapes and validated by the same rules.
struct CredentialsForm {
    var credentials: Credentials?
    var config: [String: JSONValue] = [:]
    /// Problems by form field.
    var errors: [String: String] = [:]

    init(type: IntegrationType, form: Form) {
        var value: JSONValue?
        switch type {
        case .openai, .anthropic, .gemini:
            value = form.trimmed("api_key").map(JSONValue.string)
            if type == .openai {
                if let organization = form.trimmed("organization") { config["organization"] = .string(organization) }
                if let project = form.trimmed("project") { config["project"] = .string(project) }
            }
        case .aws:
            var fields: [String: JSONValue] = [:]
            for name in ["access_key_id", "secret_access_key", "session_token"] {
                if let text = form.trimmed(name) { fields[name] = .string(text) }
            }
            value = .object(fields)
            if let region = form.trimmed("region") { config["region"] = .string(region) }
        case .azure:
            var fields: [String: JSONValue] = [:]
            for name in ["tenant_id", "client_id", "client_secret"] {
                if let text = form.trimmed(name) { fields[name] = .string(text) }
            }
            value = .object(fields)
        case .googleCloud:
            let file = form.trimmed("service_account_file")
            let pasted = form.trimmed("service_account_json")
            if file != nil && pasted != nil {
                errors["service_account"] = "choose a file or paste the JSON, not both"
                return
            }
            guard let text = file ?? pasted else {
                errors["service_account"] = "is required"
                return
            }
            guard let json = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else {
                errors["service_account"] = "must be the service account's JSON key file"
                return
            }
            value = json
        }
        guard let value else {
            errors[Self.primaryField(type)] = "is required"
            return
        }
        switch CredentialValidator.validate(type: type, value) {
        case .success(let valid): credentials = valid
        case .failure(let problems): add(problems, type: type)
        }
        add(CredentialValidator.validateConfig(type: type, config), type: type)
    }

    private mutating func add(_ problems: FieldErrors, type: IntegrationType) {
        for (key, message) in problems.problems {
            let field: String
            if type == .googleCloud {
                field = "service_account"
            } else if key.hasPrefix("credentials."), type == .aws || type == .azure {
                field = String(key.dropFirst("credentials.".count))
            } else if key.hasPrefix("config.") {
                field = String(key.dropFirst("config.".count))
            } else {
                field = Self.primaryField(type)
            }
            if errors[field] == nil { errors[field] = message }
        }
    }

    static func primaryField(_ type: IntegrationType) -> String {
        switch type {
        case .openai, .anthropic, .gemini: "api_key"
        case .googleCloud: "service_account"
        case .aws: "access_key_id"
        case .azure: "tenant_id"
        }
    }
}
