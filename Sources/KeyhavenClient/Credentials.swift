import Foundation

/// Decrypted provider credentials, typed per integration type, with the integration's non-secret settings.
///
/// Never printable: `description`, `debugDescription` and reflection all show `<redacted>`, so a credential that
/// reaches a log line or an interpolated string does not leak.
public enum Credentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// An OpenAI API key, with the optional organization and project ids.
    case openAI(apiKey: String, organization: String? = nil, project: String? = nil)
    /// A Google Cloud service account's key file.
    case googleCloud(ServiceAccount)
    /// AWS access keys.
    case aws(AWSCredentials)
    /// An Azure service principal.
    case azure(AzureServicePrincipal)
    /// An Anthropic API key.
    case anthropic(apiKey: String)
    /// A Gemini API key.
    case gemini(apiKey: String)
    /// An Azure OpenAI resource's key, with the resource's name (its endpoint is
    /// `https://{resource}.openai.azure.com`) and the API version the gateway adds when a request has none.
    case azureOpenAI(apiKey: String, resource: String, apiVersion: String? = nil)
    /// A service account used for Vertex AI in `project` and `region` (the server's default when nil).
    case vertexAI(ServiceAccount, project: String, region: String? = nil)
    /// The key of a custom OpenAI-compatible endpoint at `baseURL` (on an origin the server's operator allows).
    case openAICompatible(apiKey: String, baseURL: String)
    /// The API key of another catalog provider without settings (Mistral, Groq, DeepSeek, xAI, OpenRouter,
    /// Together, Fireworks, Perplexity, Cohere, or one the server's operator added).
    case apiKey(provider: IntegrationType, key: String)

    /// The integration type these credentials belong to.
    public var type: IntegrationType {
        switch self {
        case .openAI: .openai
        case .googleCloud: .googleCloud
        case .aws: .aws
        case .azure: .azure
        case .anthropic: .anthropic
        case .gemini: .gemini
        case .azureOpenAI: .azureOpenAI
        case .vertexAI: .vertexAI
        case .openAICompatible: .openAICompatible
        case .apiKey(let provider, _): provider
        }
    }

    /// Always `<redacted>`.
    public var description: String { "<redacted>" }
    /// Always `<redacted>`.
    public var debugDescription: String { "<redacted>" }
    /// A mirror without children, so `dump` shows nothing secret.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .enum) }
}

/// A Google Cloud service account's JSON key file.
public struct ServiceAccount: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// Every field of the key file (`type`, `client_email`, `private_key`, `private_key_id`, `token_uri`, …).
    public var fields: [String: String]
    /// OAuth scopes for the verification token (`config.scopes`); nil for the server's default.
    public var scopes: [String]?

    /// Wraps the fields of a key file.
    public init(fields: [String: String], scopes: [String]? = nil) {
        self.fields = fields
        self.scopes = scopes
    }

    /// Reads a key file's JSON text.
    ///
    /// - Throws: `KeyhavenClientError.invalidInput` if the text is not a JSON object of strings.
    public init(json: String, scopes: [String]? = nil) throws {
        guard let object = try? JSONDecoder().decode([String: String].self, from: Data(json.utf8)) else {
            throw KeyhavenClientError.invalidInput("The service account key file must be a JSON object of strings.")
        }
        self.init(fields: object, scopes: scopes)
    }

    /// The account's email, not a secret.
    public var clientEmail: String? { fields["client_email"] }
    /// The PEM private key.
    public var privateKey: String? { fields["private_key"] }
    /// The private key's id.
    public var privateKeyID: String? { fields["private_key_id"] }
    /// The account's token endpoint.
    public var tokenURI: String? { fields["token_uri"] }
    /// The project the account belongs to.
    public var projectID: String? { fields["project_id"] }

    /// Shows the email only.
    public var description: String { "ServiceAccount(\(clientEmail ?? "?"), private key <redacted>)" }
    /// Shows the email only.
    public var debugDescription: String { description }
    /// A mirror without children, so `dump` shows nothing secret.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// AWS access keys and the region used to check them.
public struct AWSCredentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// The access key id (`AKIA…` or `ASIA…`); not a secret.
    public var accessKeyID: String
    /// The secret access key.
    public var secretAccessKey: String
    /// The session token of temporary (`ASIA…`) keys.
    public var sessionToken: String?
    /// The region (`config.region`); nil for the server's default, `us-east-1`.
    public var region: String?

    /// Creates the value.
    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil, region: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.region = region
    }

    /// Shows the access key id only.
    public var description: String { "AWSCredentials(\(accessKeyID), secret <redacted>)" }
    /// Shows the access key id only.
    public var debugDescription: String { description }
    /// A mirror without children, so `dump` shows nothing secret.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// An Azure service principal's client secret.
public struct AzureServicePrincipal: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// The directory (tenant) id.
    public var tenantID: String
    /// The application (client) id.
    public var clientID: String
    /// The client secret's value.
    public var clientSecret: String
    /// `public`, `usgovernment` or `china` (`config.cloud`); nil for the server's default, `public`.
    public var cloud: String?

    /// Creates the value.
    public init(tenantID: String, clientID: String, clientSecret: String, cloud: String? = nil) {
        self.tenantID = tenantID
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.cloud = cloud
    }

    /// Shows the ids only.
    public var description: String {
        "AzureServicePrincipal(tenant \(tenantID), client \(clientID), secret <redacted>)"
    }
    /// Shows the ids only.
    public var debugDescription: String { description }
    /// A mirror without children, so `dump` shows nothing secret.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

// MARK: Wire form

extension Credentials {
    /// The `credentials` and `config` members of a request body.
    var wire: (credentials: JSON, config: JSON) {
        switch self {
        case .openAI(let key, let organization, let project):
            var config: [String: JSON] = [:]
            if let organization { config["organization"] = .string(organization) }
            if let project { config["project"] = .string(project) }
            return (.string(key), .object(config))
        case .googleCloud(let account):
            return (
                .object(account.fields.mapValues(JSON.string)),
                .object(account.scopes.map { ["scopes": .array($0.map(JSON.string))] } ?? [:])
            )
        case .aws(let keys):
            var credentials: [String: JSON] = [
                "access_key_id": .string(keys.accessKeyID), "secret_access_key": .string(keys.secretAccessKey),
            ]
            if let token = keys.sessionToken { credentials["session_token"] = .string(token) }
            return (.object(credentials), .object(keys.region.map { ["region": .string($0)] } ?? [:]))
        case .azure(let principal):
            return (
                .object([
                    "tenant_id": .string(principal.tenantID), "client_id": .string(principal.clientID),
                    "client_secret": .string(principal.clientSecret),
                ]),
                .object(principal.cloud.map { ["cloud": .string($0)] } ?? [:])
            )
        case .anthropic(let key), .gemini(let key), .apiKey(_, let key):
            return (.string(key), .object([:]))
        case .azureOpenAI(let key, let resource, let apiVersion):
            var config: [String: JSON] = ["resource": .string(resource)]
            if let apiVersion { config["api_version"] = .string(apiVersion) }
            return (.string(key), .object(config))
        case .vertexAI(let account, let project, let region):
            var config: [String: JSON] = ["project": .string(project)]
            if let region { config["region"] = .string(region) }
            if let scopes = account.scopes { config["scopes"] = .array(scopes.map(JSON.string)) }
            return (.object(account.fields.mapValues(JSON.string)), .object(config))
        case .openAICompatible(let key, let baseURL):
            return (.string(key), .object(["base_url": .string(baseURL)]))
        }
    }

    /// Reads the `credentials` and `config` of a credentials response for an integration of `type`.
    init?(type: IntegrationType, credentials: JSON, config: JSON) {
        let settings = config.objectValue ?? [:]
        switch (type, credentials) {
        case (.openai, .string(let key)):
            self = .openAI(
                apiKey: key, organization: settings["organization"]?.stringValue,
                project: settings["project"]?.stringValue)
        case (.anthropic, .string(let key)):
            self = .anthropic(apiKey: key)
        case (.gemini, .string(let key)):
            self = .gemini(apiKey: key)
        case (.azureOpenAI, .string(let key)):
            guard let resource = settings["resource"]?.stringValue else { return nil }
            self = .azureOpenAI(apiKey: key, resource: resource, apiVersion: settings["api_version"]?.stringValue)
        case (.openAICompatible, .string(let key)):
            guard let baseURL = settings["base_url"]?.stringValue else { return nil }
            self = .openAICompatible(apiKey: key, baseURL: baseURL)
        case (.vertexAI, .object(let object)):
            var fields: [String: String] = [:]
            for (name, value) in object {
                guard let text = value.stringValue else { return nil }
                fields[name] = text
            }
            guard let project = settings["project"]?.stringValue else { return nil }
            let scopes = settings["scopes"]?.arrayValue?.compactMap(\.stringValue)
            self = .vertexAI(
                ServiceAccount(fields: fields, scopes: scopes), project: project,
                region: settings["region"]?.stringValue)
        case (_, .string(let key)) where ![.openai, .googleCloud, .aws, .azure].contains(type):
            self = .apiKey(provider: type, key: key)
        case (.googleCloud, .object(let object)):
            var fields: [String: String] = [:]
            for (name, value) in object {
                guard let text = value.stringValue else { return nil }
                fields[name] = text
            }
            let scopes = settings["scopes"]?.arrayValue?.compactMap(\.stringValue)
            self = .googleCloud(ServiceAccount(fields: fields, scopes: scopes))
        case (.aws, .object(let object)):
            guard let id = object["access_key_id"]?.stringValue, let secret = object["secret_access_key"]?.stringValue
            else { return nil }
            self = .aws(
                AWSCredentials(
                    accessKeyID: id, secretAccessKey: secret, sessionToken: object["session_token"]?.stringValue,
                    region: settings["region"]?.stringValue))
        case (.azure, .object(let object)):
            guard let tenant = object["tenant_id"]?.stringValue, let client = object["client_id"]?.stringValue,
                let secret = object["client_secret"]?.stringValue
            else { return nil }
            self = .azure(
                AzureServicePrincipal(
                    tenantID: tenant, clientID: client, clientSecret: secret, cloud: settings["cloud"]?.stringValue))
        default:
            return nil
        }
    }
}
