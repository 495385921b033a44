import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices
import KeyhavenWeb

/// The new-integration form.
extension IntegrationPages {
    @Sendable func newForm(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let type = request.uri.queryParameters["type"].flatMap { IntegrationType(rawValue: String($0)) }
        let workspace = try Self.workspace(request.uri.queryParameters["workspace"].map(String.init), viewer: viewer)
        try await services.integrations.workspace(workspace, .editIntegrations, by: viewer.caller(request, context))
        return newPage(type: type, values: Self.workspaceField(workspace, viewer: viewer), errors: [:], page: page)
    }

    @Sendable func create(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        let workspace = try Self.workspace(form["workspace"], viewer: viewer)
        let caller = viewer.caller(request, context)
        try await services.integrations.workspace(workspace, .editIntegrations, by: caller)
        guard let type = form["type"].flatMap(IntegrationType.init(rawValue:)) else {
            return newPage(
                type: nil, values: Self.workspaceField(workspace, viewer: viewer), errors: [:], page: page,
                status: .unprocessableContent)
        }
        let kept = Self.keptValues(form).merging(Self.workspaceField(workspace, viewer: viewer)) { $1 }
        var input = CredentialsForm(type: type, form: form)
        let name = Self.validName(form["name"])
        if name == nil { input.errors["name"] = .name }
        guard input.errors.isEmpty, let name, let credentials = input.credentials else {
            return newPage(type: type, values: kept, errors: input.errors, page: page, status: .unprocessableContent)
        }
        do {
            _ = try await services.integrations.create(by: caller) {
                IntegrationDraft(
                    workspace: workspace, name: name, type: type, credentials: credentials, config: input.config)
            }
        } catch KeyhavenError.rateLimited(let seconds) {
            var response = newPage(
                type: type, values: kept, errors: [:], page: page, status: .tooManyRequests,
                message: page.texts["rate_limited"])
            response.headers[.retryAfter] = String(seconds)
            return response
        } catch KeyhavenError.conflict {
            return newPage(type: type, values: kept, errors: ["name": .nameTaken], page: page, status: .conflict)
        }
        return Response.redirect(to: Self.listPath(workspace, viewer: viewer, done: "created"), type: .normal)
    }

    private func newPage(
        type: IntegrationType?, values: [String: String], errors: [String: FieldProblem], page: PageRequest,
        status: HTTPResponse.Status = .ok, message: String? = nil
    ) -> Response {
        let texts = page.texts
        let view = NewIntegrationPage(
            groups: ProviderGroup.all(texts),
            chosen: type.map {
                ProviderFields($0, texts: texts, values: values, errors: FieldMessages(errors, texts: texts))
            },
            values: FormValues(values),
            workspace: values["workspace"],
            errors: type == nil ? .none : FieldMessages(errors, texts: texts),
            formError: type != nil && (!errors.isEmpty || message != nil) ? message ?? texts["fix_errors"] : nil)
        return renderer.page(
            "new", view, title: texts["new_integration"], for: page, section: .integrations,
            workspace: values["workspace"].flatMap(UUID.init(text:)) ?? page.viewer?.user.id, status: status)
    }
}

/// The new-integration form: the providers to choose from, then the chosen one's fields.
struct NewIntegrationPage: Sendable {
    let groups: [ProviderGroup]
    let chosen: ProviderFields?
    /// What the form shows again after a refusal (never a secret).
    let values: FormValues
    /// The organization's workspace the integration is for; nil for the personal one.
    let workspace: String?
    let errors: FieldMessages
    let formError: String?
}

/// A provider to choose.
struct ProviderOption: Sendable {
    let type: String
    let label: String
    let description: String
    let mark: String
    /// What the page's search matches: its names and id, lowercased.
    let terms: String
}

/// The catalog's providers of one group (AI models, cloud), as the new-integration page lists them.
struct ProviderGroup: Sendable {
    let id: String
    let title: String
    let providers: [ProviderOption]

    static func all(_ texts: Texts) -> [ProviderGroup] {
        let entries = ProviderCatalog.current.providers
        return ProviderEntry.Group.allCases.map { group in
            ProviderGroup(
                id: group.rawValue, title: texts["providers_\(group.rawValue)"],
                providers: entries.filter { $0.group == group }.map { entry in
                    ProviderOption(
                        type: entry.id, label: texts.type(entry.type), description: texts.description(entry),
                        mark: entry.mark,
                        terms: [entry.id, entry.names.en, entry.names.es].joined(separator: " ").lowercased())
                })
        }.filter { !$0.providers.isEmpty }
    }
}

/// A provider's credential fields from a form, turned into the API's shapes and validated by the same rules.
struct CredentialsForm {
    var credentials: Credentials?
    var config: [String: JSONValue] = [:]
    /// Problems by form field.
    var errors: [String: FieldProblem] = [:]

    init(type: IntegrationType, form: Form) {
        var value: JSONValue?
        for setting in type.entry?.settings ?? [] {
            if let text = form.trimmed(setting.name) { config[setting.name] = .string(text) }
        }
        switch type.entry?.credential.kind {
        case nil:
            // Not a provider of the catalog: the validator below says so.
            value = .null
        case .apiKey:
            value = form.trimmed("api_key").map(JSONValue.string)
        case .awsKeys:
            var fields: [String: JSONValue] = [:]
            for name in ["access_key_id", "secret_access_key", "session_token"] {
                if let text = form.trimmed(name) { fields[name] = .string(text) }
            }
            value = .object(fields)
            if let region = form.trimmed("region") { config["region"] = .string(region) }
        case .azureServicePrincipal:
            var fields: [String: JSONValue] = [:]
            for name in ["tenant_id", "client_id", "client_secret"] {
                if let text = form.trimmed(name) { fields[name] = .string(text) }
            }
            value = .object(fields)
        case .googleServiceAccount:
            let file = form.trimmed("service_account_file")
            let pasted = form.trimmed("service_account_json")
            if file != nil && pasted != nil {
                errors["service_account"] = .fileOrPaste
                return
            }
            guard let text = file ?? pasted else {
                errors["service_account"] = .required
                return
            }
            guard let json = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else {
                errors["service_account"] = .serviceAccountFile
                return
            }
            value = json
        }
        guard let value else {
            errors[Self.primaryField(type)] = .required
            return
        }
        switch CredentialValidator.validate(type: type, value) {
        case .success(let valid): credentials = valid
        case .failure(let problems): add(problems, type: type)
        }
        add(CredentialValidator.validateConfig(type: type, config), type: type)
    }

    private mutating func add(_ problems: FieldErrors, type: IntegrationType) {
        let kind = type.entry?.credential.kind
        for (key, problem) in problems.all {
            let field: String
            if kind == .googleServiceAccount {
                field = "service_account"
            } else if key.hasPrefix("credentials."), kind == .awsKeys || kind == .azureServicePrincipal {
                field = String(key.dropFirst("credentials.".count))
            } else if key.hasPrefix("config.") {
                field = String(key.dropFirst("config.".count))
            } else {
                field = Self.primaryField(type)
            }
            if errors[field] == nil { errors[field] = problem }
        }
    }

    static func primaryField(_ type: IntegrationType) -> String {
        switch type.entry?.credential.kind {
        case .apiKey?, nil: "api_key"
        case .googleServiceAccount?: "service_account"
        case .awsKeys?: "access_key_id"
        case .azureServicePrincipal?: "tenant_id"
        }
    }
}
