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

    /// The integration of the path, if the reader may take `action` on it, with their role in its workspace.
    func integration(
        _ context: AppRequestContext, _ viewer: Viewer, _ action: Policy.Action
    ) async throws -> (integration: Integration, role: WorkspaceRole) {
        try await services.access.integrationAndRole(try UUID.path(context), action, for: viewer.user)
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
