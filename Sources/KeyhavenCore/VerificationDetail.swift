import Foundation

/// What a check found beyond its outcome: something Keyhaven noticed, or what the provider said, with the values it
/// names.
///
/// Its English ``text`` follows the outcome's sentence in the stored `error_message` (the API's words, which stay as
/// they are); interfaces in other languages translate ``code`` and fill in ``parameters``.
public enum VerificationDetail: Sendable, Equatable {
    /// The provider's host name did not resolve.
    case unresolvableHost(String)
    /// The request could not be made from the stored settings or credentials.
    case requestNotBuilt(UnbuiltRequest)
    /// A token endpoint answered 200 without an access token.
    case noAccessToken
    /// A model list endpoint answered 200 without the list.
    case modelListMissing
    /// The integration's provider is no longer in this server's catalog.
    case providerNotInCatalog
    /// AWS STS answered 200 without the account and ARN.
    case callerIdentityMissing
    /// A service account names a token endpoint that is not Google's.
    case tokenURINotGoogle
    /// A service account's private key could not be read.
    case privateKeyUnreadable
    /// Stored credentials no longer pass today's input rules; `fields` lists the fields.
    case storedCredentialsMalformed(fields: String)
    /// Stored settings no longer pass today's input rules; `fields` lists the fields.
    case storedSettingsInvalid(fields: String)
    /// The check did not finish within its deadline.
    case timedOut
    /// Azure refused the service principal with a code Keyhaven knows.
    case azure(code: String, AzureRefusal)
    /// The provider's own words (not translatable): its error code, its message, or both.
    case provider(code: String?, message: String?)

    /// Why a request could not be made.
    public enum UnbuiltRequest: String, Sendable, CaseIterable {
        case endpointNotHTTP = "endpoint_not_http"
        case unsendableHeader = "unsendable_header"
        case invalidRegion = "invalid_region"
        case noRegionalEndpoint = "no_regional_endpoint"
        case invalidTenantOrCloud = "invalid_tenant_or_cloud"
        case endpointWithoutHost = "endpoint_without_host"

        /// The reason in English, as it follows "The request could not be built: ".
        public var text: String {
            switch self {
            case .endpointNotHTTP: "the endpoint is not an http(s) URL"
            case .unsendableHeader: "a header value holds characters that cannot be sent"
            case .invalidRegion: "the region is not valid"
            case .noRegionalEndpoint: "no STS endpoint for this region"
            case .invalidTenantOrCloud: "the tenant or cloud is not valid"
            case .endpointWithoutHost: "the endpoint has no host"
            }
        }
    }

    /// The AADSTS codes whose meaning Keyhaven states.
    public enum AzureRefusal: String, Sendable, CaseIterable {
        case invalidClientSecret = "invalid_client_secret"
        case expiredClientSecret = "expired_client_secret"
        case unknownApplication = "unknown_application"
        case unknownTenant = "unknown_tenant"

        /// The meaning in English.
        public var text: String {
            switch self {
            case .invalidClientSecret: "Invalid client secret."
            case .expiredClientSecret: "The client secret has expired."
            case .unknownApplication: "Unknown application (client id) in this tenant."
            case .unknownTenant: "Unknown tenant."
            }
        }
    }

    /// The kinds of detail, each with a stable name.
    public enum Code: String, Sendable, CaseIterable {
        case unresolvableHost = "unresolvable_host"
        case requestNotBuilt = "request_not_built"
        case noAccessToken = "no_access_token"
        case modelListMissing = "model_list_missing"
        case providerNotInCatalog = "provider_not_in_catalog"
        case callerIdentityMissing = "caller_identity_missing"
        case tokenURINotGoogle = "token_uri_not_google"
        case privateKeyUnreadable = "private_key_unreadable"
        case storedCredentialsMalformed = "stored_credentials_malformed"
        case storedSettingsInvalid = "stored_settings_invalid"
        case timedOut = "timed_out"
        case azure
        case provider
    }

    /// What kind of detail it is.
    public var code: Code {
        switch self {
        case .unresolvableHost: .unresolvableHost
        case .requestNotBuilt: .requestNotBuilt
        case .noAccessToken: .noAccessToken
        case .modelListMissing: .modelListMissing
        case .providerNotInCatalog: .providerNotInCatalog
        case .callerIdentityMissing: .callerIdentityMissing
        case .tokenURINotGoogle: .tokenURINotGoogle
        case .privateKeyUnreadable: .privateKeyUnreadable
        case .storedCredentialsMalformed: .storedCredentialsMalformed
        case .storedSettingsInvalid: .storedSettingsInvalid
        case .timedOut: .timedOut
        case .azure: .azure
        case .provider: .provider
        }
    }

    /// The values the detail names, by name: a host, a list of fields, a provider's code or message, and the name
    /// of a reason (`reason`) for the kinds that have one.
    public var parameters: [String: String] {
        switch self {
        case .unresolvableHost(let host): ["host": host]
        case .requestNotBuilt(let reason): ["reason": reason.rawValue]
        case .storedCredentialsMalformed(let fields), .storedSettingsInvalid(let fields): ["fields": fields]
        case .azure(let code, let refusal): ["code": code, "reason": refusal.rawValue]
        case .provider(let code, let message):
            [("code", code), ("message", message)].reduce(into: [:]) { result, pair in
                if let value = pair.1 { result[pair.0] = value }
            }
        case .noAccessToken, .modelListMissing, .providerNotInCatalog, .callerIdentityMissing, .tokenURINotGoogle,
            .privateKeyUnreadable, .timedOut:
            [:]
        }
    }

    /// The detail in English, as it follows the outcome's sentence in `error_message`.
    public var text: String {
        switch self {
        case .unresolvableHost(let host): "Could not resolve \(host)."
        case .requestNotBuilt(let reason): "The request could not be built: \(reason.text)."
        case .noAccessToken: "No access token was returned."
        case .modelListMissing: "The model list was missing."
        case .providerNotInCatalog: "This server's provider catalog no longer has the integration's provider."
        case .callerIdentityMissing: "The caller identity was missing."
        case .tokenURINotGoogle: "The service account's token_uri is not a Google endpoint."
        case .privateKeyUnreadable: "The private key could not be read."
        case .storedCredentialsMalformed(let fields):
            "The stored credentials are not in the expected format (\(fields)); save them again."
        case .storedSettingsInvalid(let fields): "The stored settings are not valid (\(fields)); save them again."
        case .timedOut: "The check did not finish in time."
        case .azure(let code, let refusal): "\(code): \(refusal.text)"
        case .provider(let code, let message): [code, message].compactMap { $0 }.joined(separator: ": ")
        }
    }

    /// The detail a stored code and its parameters name; nil for anything else.
    public init?(code: String, parameters: [String: String]) {
        switch Code(rawValue: code) {
        case .unresolvableHost?:
            guard let host = parameters["host"] else { return nil }
            self = .unresolvableHost(host)
        case .requestNotBuilt?:
            guard let reason = parameters["reason"].flatMap(UnbuiltRequest.init(rawValue:)) else { return nil }
            self = .requestNotBuilt(reason)
        case .storedCredentialsMalformed?:
            guard let fields = parameters["fields"] else { return nil }
            self = .storedCredentialsMalformed(fields: fields)
        case .storedSettingsInvalid?:
            guard let fields = parameters["fields"] else { return nil }
            self = .storedSettingsInvalid(fields: fields)
        case .azure?:
            guard let code = parameters["code"],
                let refusal = parameters["reason"].flatMap(AzureRefusal.init(rawValue:))
            else { return nil }
            self = .azure(code: code, refusal)
        case .provider?:
            guard parameters["code"] != nil || parameters["message"] != nil else { return nil }
            self = .provider(code: parameters["code"], message: parameters["message"])
        case .noAccessToken?: self = .noAccessToken
        case .modelListMissing?: self = .modelListMissing
        case .providerNotInCatalog?: self = .providerNotInCatalog
        case .callerIdentityMissing?: self = .callerIdentityMissing
        case .tokenURINotGoogle?: self = .tokenURINotGoogle
        case .privateKeyUnreadable?: self = .privateKeyUnreadable
        case .timedOut?: self = .timedOut
        case nil: return nil
        }
    }

    /// The detail with every value passed through `clean` (the provider's words, scrubbed of any credential).
    public func mapValues(_ clean: (String) -> String) -> VerificationDetail {
        switch self {
        case .unresolvableHost(let host): .unresolvableHost(clean(host))
        case .storedCredentialsMalformed(let fields): .storedCredentialsMalformed(fields: clean(fields))
        case .storedSettingsInvalid(let fields): .storedSettingsInvalid(fields: clean(fields))
        case .azure(let code, let refusal): .azure(code: clean(code), refusal)
        case .provider(let code, let message): .provider(code: code.map(clean), message: message.map(clean))
        case .requestNotBuilt, .noAccessToken, .modelListMissing, .providerNotInCatalog, .callerIdentityMissing,
            .tokenURINotGoogle, .privateKeyUnreadable, .timedOut:
            self
        }
    }
}

/// Why the last check of an integration failed, kept beside its `error_message` (in the non-secret verification
/// details) so that an interface can say it in the reader's language.
public struct VerificationProblem: Sendable, Equatable {
    /// The check's outcome.
    public var outcome: VerificationOutcome
    /// What it found beyond the outcome.
    public var detail: VerificationDetail?
    /// The English `error_message` written with it. A message written later by something else (a credential that
    /// no longer decrypts) differs, and then this problem no longer describes the integration.
    public var message: String

    /// The key under which the verification details hold the problem.
    public static let storedKey = "problem"

    /// Creates a problem.
    public init(outcome: VerificationOutcome, detail: VerificationDetail?, message: String) {
        self.outcome = outcome
        self.detail = detail
        self.message = message
    }

    /// The problem as JSON: `outcome`, `message`, and the detail's `code` and `parameters`.
    public var json: JSONValue {
        var object: [String: JSONValue] = ["outcome": .string(outcome.rawValue), "message": .string(message)]
        if let detail {
            object["code"] = .string(detail.code.rawValue)
            object["parameters"] = .object(detail.parameters.mapValues(JSONValue.string))
        }
        return .object(object)
    }

    /// The problem stored in the verification details `stored` (JSON text), if it still describes `message`, the
    /// integration's `error_message`; nil otherwise, and for anything that does not read as one.
    public init?(stored: String?, message: String?) {
        guard let stored, let message,
            case .object(let details)? = try? JSONValue(parsing: stored),
            case .object(let problem)? = details[Self.storedKey],
            problem["message"]?.stringValue == message,
            let outcome = problem["outcome"]?.stringValue.flatMap(VerificationOutcome.init(rawValue:))
        else { return nil }
        var detail: VerificationDetail?
        if let code = problem["code"]?.stringValue {
            guard case .object(let values)? = problem["parameters"] else { return nil }
            detail = VerificationDetail(code: code, parameters: values.compactMapValues(\.stringValue))
            if detail == nil { return nil }
        }
        self.init(outcome: outcome, detail: detail, message: message)
    }
}
