import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices
import KeyhavenWeb

/// The integrations list, the new-integration form and an integration's detail page.
struct IntegrationPages: Sendable {
    let services: WebPages.Services
    let renderer: PageRenderer

    /// Flash messages a redirect may name (`?done=created`), so nothing but these texts can be shown that way.
    static let flashes = [
        "created", "replaced", "renamed", "enabled", "disabled", "deleted", "rotation_saved", "rotation_started",
        "joined",
        "limits_saved", "limits_invalid",
    ]

    /// The integration of the path, if the reader may take `action` on it (``IntegrationService`` decides).
    func permit(
        _ request: Request, _ context: AppRequestContext, _ viewer: Viewer, _ action: Policy.Action
    ) async throws -> IntegrationService.Permitted {
        try await services.integrations.permit(try UUID.path(context), action, by: viewer.caller(request, context))
    }

    // MARK: View values

    /// The provider's mark: its initials, beside its name (so never the only cue).
    static func mark(_ type: IntegrationType) -> String { type.entry?.mark ?? "?" }

    /// The notice a redirect names (`?done=…`), if it is one of `flashes`, with its key made by `key`.
    static func flash(
        _ request: Request, texts: Texts, among flashes: [String] = flashes, key: (String) -> String = { "\($0)_flash" }
    ) -> Notice? {
        guard let done = request.uri.queryParameters["done"].map(String.init), flashes.contains(done) else {
            return nil
        }
        return Notice(text: texts[key(done)])
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
        guard let raw = text, raw.unicodeScalars.count <= 100,
            !raw.unicodeScalars.contains(where: { TextRule.isRefused($0) })
        else { return nil }
        let trimmed = raw.trimmingCharacters(in: .whitespaces)
        return trimmed.isEmpty ? nil : trimmed
    }

    /// The label of a fact a check found (an AWS account, a model count).
    static func detailLabel(_ key: String, texts: Texts) -> String {
        switch key {
        case "account_id": texts["account"]
        case "arn": texts["arn"]
        case "model_count": texts["models"]
        case "tenant_id": texts["tenant_id"]
        case "client_email": texts["email"]
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

    static func idText(_ id: UUID) -> String { id.lowercasedText }

    static func iso(_ date: Date) -> String { date.formatted(Date.ISO8601FormatStyle()) }
}

/// An integration's card, and the head of its detail page. Never a credential: the hint only.
struct IntegrationCard: Sendable {
    let id: String
    let name: String
    let type: String
    let typeLabel: String
    let mark: String
    let status: String
    let statusLabel: String
    /// Whether the reader's role shows the controls that change it.
    let canEdit: Bool
    let verifying: Bool
    let enabled: Bool
    let lastVerified: TimeView
    let lastUsed: TimeView
    let version: Int
    let rotationDue: Bool
    let hint: String?
    /// Why a credential that a rotation replaced is not deleted at the provider yet.
    let retireError: OriginalText?
    /// Why the integration is in error.
    let problem: ProblemView?
    /// Whether the month's spending has reached the budget's warning share (shown on the list).
    var budgetWarning = false

    init(_ integration: Integration, texts: Texts, canEdit: Bool) {
        id = IntegrationPages.idText(integration.id)
        name = integration.name
        type = integration.type.rawValue
        typeLabel = texts.type(integration.type)
        mark = IntegrationPages.mark(integration.type)
        status = integration.status.rawValue
        statusLabel = texts.status(integration.status)
        self.canEdit = canEdit
        verifying = integration.status == .verifying
        enabled = integration.enabled
        lastVerified = TimeView(integration.lastVerifiedAt, texts: texts)
        lastUsed = TimeView(integration.lastUsedAt, texts: texts)
        version = integration.credentialVersion
        rotationDue = integration.rotationDue()
        hint = integration.credentialHint
        retireError = OriginalText(integration.retireError, texts: texts)
        problem = ProblemView.of(integration, texts: texts)
    }
}

/// Which credential fields a provider's form shows.
struct ProviderFields: Sendable {
    let type: String
    let label: String
    let mark: String
    let isKey: Bool
    let isGoogle: Bool
    let isAWS: Bool
    let isAzure: Bool
    /// An API-key provider's settings (an OpenAI organization and project).
    let settings: [SettingField]
    let hasSettings: Bool

    /// One setting's field, with what the form shows again and its problem.
    struct SettingField: Sendable {
        let name: String
        let label: String
        let placeholder: String
        let value: String
        let error: String?
    }

    init(_ type: IntegrationType, texts: Texts, values: [String: String], errors: FieldMessages) {
        self.type = type.rawValue
        label = texts.type(type)
        mark = IntegrationPages.mark(type)
        let kind = type.entry?.credential.kind
        isKey = kind == .apiKey
        isGoogle = kind == .googleServiceAccount
        isAWS = kind == .awsKeys
        isAzure = kind == .azureServicePrincipal
        settings = (type.entry?.settings ?? []).map { setting in
            SettingField(
                name: setting.name,
                label: setting.required
                    ? texts.table["setting_\(setting.name)"] ?? setting.name
                    : texts.table["\(setting.name)_optional"]
                        ?? texts.format("setting_optional", ["name": setting.name]),
                placeholder: setting.prefix.isEmpty ? "" : setting.prefix + "…", value: values[setting.name] ?? "",
                error: errors.messages[setting.name])
        }
        hasSettings = !settings.isEmpty
    }
}
