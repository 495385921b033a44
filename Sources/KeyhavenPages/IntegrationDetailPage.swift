import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices
import KeyhavenWeb

/// An integration's detail page and the actions on it: test, replace, rename, enable, disable, rotation, delete.
extension IntegrationPages {
    @Sendable func detail(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        return try await detailPage(
            try await permit(request, context, viewer, .view), page: page, viewer: viewer,
            extra: DetailAddition(flash: Self.flash(request, texts: page.texts)))
    }

    @Sendable func test(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws
        -> Response
    {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let target = try await permit(request, context, viewer, .editIntegrations)
        let record = try await services.integrations.test(target)
        return try await detailPage(
            target, reloaded: try await services.integrations.reload(target), page: page, viewer: viewer,
            extra: DetailAddition(result: TestResult(record, texts: page.texts)))
    }

    @Sendable func replace(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let target = try await permit(request, context, viewer, .editIntegrations)
        let id = target.integration.id
        let input = CredentialsForm(type: target.integration.type, form: form)
        guard input.errors.isEmpty, let credentials = input.credentials else {
            return try await detailPage(
                target, page: page, viewer: viewer,
                extra: DetailAddition(replaceErrors: input.errors, kept: Self.keptValues(form)),
                status: .unprocessableContent)
        }
        var changes = IntegrationChanges()
        changes.credentials = credentials
        changes.config = input.config
        _ = try await services.integrations.update(target, changes)
        return Response.redirect(to: "/integrations/\(Self.idText(id))?done=replaced", type: .normal)
    }

    @Sendable func rename(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let target = try await permit(request, context, viewer, .editIntegrations)
        let id = target.integration.id
        guard let name = Self.validName(form["name"]) else {
            return try await detailPage(
                target, page: page, viewer: viewer,
                extra: DetailAddition(renameError: page.texts.problem(.name)), status: .unprocessableContent)
        }
        var changes = IntegrationChanges()
        changes.name = name
        do {
            _ = try await services.integrations.update(target, changes)
        } catch KeyhavenError.conflict {
            return try await detailPage(
                target, page: page, viewer: viewer,
                extra: DetailAddition(renameError: page.texts.problem(.nameTaken)), status: .conflict)
        }
        return Response.redirect(to: "/integrations/\(Self.idText(id))?done=renamed", type: .normal)
    }

    @Sendable func enable(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        try await setEnabled(true, request: request, context: context, viewer: viewer)
    }

    @Sendable func disable(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        try await setEnabled(false, request: request, context: context, viewer: viewer)
    }

    private func setEnabled(_ enabled: Bool, request: Request, context: AppRequestContext, viewer: Viewer) async throws
        -> Response
    {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let target = try await permit(request, context, viewer, .editIntegrations)
        let id = target.integration.id
        _ = try await services.integrations.update(target, IntegrationChanges(enabled: enabled))
        return Response.redirect(
            to: "/integrations/\(Self.idText(id))?done=\(enabled ? "enabled" : "disabled")", type: .normal)
    }

    @Sendable func setRotation(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let target = try await permit(request, context, viewer, .editIntegrations)
        let current = target.integration
        let id = current.id
        var errors: [String: FieldProblem] = [:]
        let mode = form["mode"].flatMap(RotationPolicy.Mode.init(rawValue:))
        if mode == nil { errors["mode"] = .rotationMode }
        let everyDays = Int(form.trimmed("every_days") ?? "90")
        if everyDays == nil { errors["every_days"] = .rotationEveryDays }
        let graceHours = Int(form.trimmed("grace_hours") ?? "24")
        if graceHours == nil { errors["grace_hours"] = .rotationGraceHours }
        if let mode, let everyDays, let graceHours {
            do {
                _ = try await services.integrations.setRotationPolicy(
                    target, RotationPolicy(mode: mode, everyDays: everyDays, graceHours: graceHours))
                return Response.redirect(to: "/integrations/\(Self.idText(id))?done=rotation_saved", type: .normal)
            } catch KeyhavenError.validationFailed(let problems) {
                // The store refused it by the policy's own rules: the same rules give each problem its code.
                let policy = RotationPolicy(mode: mode, everyDays: everyDays, graceHours: graceHours)
                let rules = policy.problems(for: current.type)
                for (field, problem) in FieldErrors.coding(problems, with: rules) {
                    errors[String(field.dropFirst("rotation.".count))] = problem
                }
            }
        }
        return try await detailPage(
            target, page: page, viewer: viewer, extra: DetailAddition(rotationErrors: errors),
            status: .unprocessableContent)
    }

    @Sendable func rotate(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        let target = try await permit(request, context, viewer, .editIntegrations)
        let id = target.integration.id
        do {
            _ = try await services.integrations.rotate(target)
        } catch KeyhavenError.conflict {
            return try await detailPage(
                target, page: page, viewer: viewer,
                extra: DetailAddition(rotationRefused: page.texts[Self.rotationRefusal(target.integration)]),
                status: .conflict)
        }
        return Response.redirect(to: "/integrations/\(Self.idText(id))?done=rotation_started", type: .normal)
    }

    @Sendable func deletePage(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let target = try await permit(request, context, viewer, .editIntegrations)
        return deleteConfirmation(target.integration, page: page, viewer: viewer, error: nil)
    }

    @Sendable func delete(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let target = try await permit(request, context, viewer, .editIntegrations)
        let integration = target.integration
        guard form["confirm_name"]?.trimmingCharacters(in: .whitespacesAndNewlines) == integration.name else {
            return deleteConfirmation(
                integration, page: page, viewer: viewer, error: page.texts["delete_confirm_mismatch"])
        }
        try await services.integrations.delete(target)
        return Response.redirect(to: Self.listPath(integration.ownerID, viewer: viewer, done: "deleted"), type: .normal)
    }

    /// Why a rotation cannot start now, from what the rotation store checks: the provider, whether the
    /// integration is enabled, and (otherwise) a rotation already under way.
    static func rotationRefusal(_ integration: Integration) -> String {
        if !RotationPolicy.allowsAutomatic(integration.type) { return "rotation_refused_type" }
        return integration.enabled ? "rotation_refused_running" : "rotation_refused_disabled"
    }

    private func deleteConfirmation(_ integration: Integration, page: PageRequest, viewer: Viewer, error: String?)
        -> Response
    {
        let view = DeletePage(
            integration: IntegrationCard(integration, texts: page.texts, canEdit: true), confirmError: error)
        return renderer.page(
            "delete", view, title: page.texts["delete_title"], for: page, section: .integrations,
            workspace: integration.ownerID, status: error == nil ? .ok : .unprocessableContent)
    }

    /// The detail page of a permitted integration (as `reloaded`, if it was read again after an action).
    private func detailPage(
        _ target: IntegrationService.Permitted, reloaded: Integration? = nil, page: PageRequest, viewer: Viewer,
        extra: DetailAddition, status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let integration = reloaded ?? target.integration
        let role = target.role
        let history = try await services.integrations.history(target)
        let canEdit = WorkspaceAccess.allows(role, .editIntegrations, in: integration.ownerID)
        let texts = page.texts
        var kept = extra.kept
        for (key, value) in integration.config {
            if kept[key] == nil, let text = value.stringValue { kept[key] = text }
        }
        var usage: IntegrationUsage?
        if Gateway.forwards(integration.type) {
            let (from, to) = try UsageController.period(from: nil, to: nil)
            let panel = try await UsagePages(services: services, renderer: renderer).panel(
                .integration(integration.id, workspace: nil), by: target.caller, from: from, to: to, texts: texts)
            usage = IntegrationUsage(
                panel: panel, canSetLimits: WorkspaceAccess.allows(role, .manageBudgets, in: integration.ownerID),
                integrationID: Self.idText(integration.id))
        }
        let view = IntegrationDetailPage(
            integration: IntegrationCard(integration, texts: texts, canEdit: canEdit), canEdit: canEdit,
            listPath: Self.listPath(integration.ownerID, viewer: viewer),
            fields: ProviderFields(
                integration.type, texts: texts, values: kept, errors: FieldMessages(extra.replaceErrors, texts: texts)),
            values: FormValues(kept), errors: FieldMessages(extra.replaceErrors, texts: texts),
            replaceFailed: !extra.replaceErrors.isEmpty,
            renameError: extra.renameError,
            rotation: RotationView(integration, rotations: history.rotations, texts: texts),
            rotationErrors: FieldMessages(extra.rotationErrors, texts: texts), rotationRefused: extra.rotationRefused,
            usage: usage,
            versions: history.versions.map { VersionRow($0, current: integration.credentialVersion, texts: texts) },
            events: history.events.map { EventRow($0, names: [integration.id: integration.name], texts: texts) },
            flash: extra.flash, result: extra.result)
        return renderer.page(
            "detail", view, title: integration.name, for: page, section: .integrations, workspace: integration.ownerID,
            status: status)
    }
}
