import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices
import KeyhavenGateway

/// An integration's detail page and the actions on it: test, replace, rename, enable, disable, rotation, delete.
extension IntegrationPages {
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
}
