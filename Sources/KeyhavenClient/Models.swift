import Foundation

/// A provider a Keyhaven server stores credentials for: an id of the server's catalog (`GET /api/catalog`). The
/// built-in providers are named here; a server may know more (its operator's additions), which decode too.
public struct IntegrationType: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    /// The catalog id, as the API sends it.
    public let rawValue: String

    /// The type of the catalog id `rawValue`.
    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    /// OpenAI.
    public static let openai = IntegrationType(rawValue: "openai")
    /// Google Cloud (a service account).
    public static let googleCloud = IntegrationType(rawValue: "google_cloud")
    /// Amazon Web Services.
    public static let aws = IntegrationType(rawValue: "aws")
    /// Microsoft Azure (a service principal).
    public static let azure = IntegrationType(rawValue: "azure")
    /// Anthropic.
    public static let anthropic = IntegrationType(rawValue: "anthropic")
    /// Google Gemini.
    public static let gemini = IntegrationType(rawValue: "gemini")
    /// Azure OpenAI (a resource's key).
    public static let azureOpenAI = IntegrationType(rawValue: "azure_openai")
    /// Google Vertex AI (a service account in a project and region).
    public static let vertexAI = IntegrationType(rawValue: "vertex_ai")
    /// Cohere.
    public static let cohere = IntegrationType(rawValue: "cohere")
    /// A custom OpenAI-compatible endpoint.
    public static let openAICompatible = IntegrationType(rawValue: "openai_compatible")
    /// Mistral AI.
    public static let mistral = IntegrationType(rawValue: "mistral")
    /// Groq.
    public static let groq = IntegrationType(rawValue: "groq")
    /// DeepSeek.
    public static let deepseek = IntegrationType(rawValue: "deepseek")
    /// xAI.
    public static let xai = IntegrationType(rawValue: "xai")
    /// OpenRouter.
    public static let openrouter = IntegrationType(rawValue: "openrouter")
    /// Together AI.
    public static let together = IntegrationType(rawValue: "together")
    /// Fireworks AI.
    public static let fireworks = IntegrationType(rawValue: "fireworks")
    /// Perplexity.
    public static let perplexity = IntegrationType(rawValue: "perplexity")

    /// The providers of the built-in catalog.
    public static let allCases: [IntegrationType] = [
        .openai, .azureOpenAI, .anthropic, .gemini, .vertexAI, .mistral, .groq, .deepseek, .xai, .openrouter,
        .together, .fireworks, .perplexity, .cohere, .openAICompatible, .googleCloud, .aws, .azure,
    ]
}

/// Where an integration's credentials stand.
public enum IntegrationStatus: String, Sendable, Codable, CaseIterable {
    /// A check with the provider is pending.
    case verifying
    /// The last check succeeded.
    case connected
    /// The last check failed; see ``Integration/errorMessage``.
    case error
    /// Turned off by its owner; its credentials are not handed out.
    case disabled
}

/// An integration as the API shows it: never any credential.
public struct Integration: Sendable, Equatable, Decodable {
    /// Its id.
    public let id: UUID
    /// Its name, unique per owner.
    public let name: String
    /// The provider.
    public let type: IntegrationType
    /// Where its credentials stand.
    public let status: IntegrationStatus
    /// Whether it is turned on.
    public let enabled: Bool
    /// The non-secret settings (`organization`, `region`, …), as JSON text values where they are text.
    public let config: [String: JSONValue]
    /// At most the last 4 characters of a secret, or a non-secret identifier.
    public let credentialHint: String?
    /// How many times the credentials were set.
    public let credentialVersion: Int
    /// The last check's problem, if it failed.
    public let errorMessage: String?
    /// When the credentials were last checked.
    public let lastVerifiedAt: Date?
    /// When the credentials were last read by a backend.
    public let lastUsedAt: Date?
    /// When it was created.
    public let createdAt: Date
    /// When it last changed.
    public let updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, name, type, status, enabled, config
        case credentialHint = "credential_hint"
        case credentialVersion = "credential_version"
        case errorMessage = "error_message"
        case lastVerifiedAt = "last_verified_at"
        case lastUsedAt = "last_used_at"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }
}

/// A page of integrations.
public struct IntegrationPage: Sendable, Decodable {
    /// The integrations, newest first.
    public let integrations: [Integration]
    /// Pass to the next call for the following page; nil on the last page.
    public let nextCursor: String?

    enum CodingKeys: String, CodingKey {
        case integrations
        case nextCursor = "next_cursor"
    }
}

/// What a connectivity check found.
public struct TestResult: Sendable, Decodable {
    /// The integration's status after the check.
    public let status: IntegrationStatus
    /// `connected`, `invalid_credentials`, `expired`, `insufficient_permissions`, `rate_limited`,
    /// `provider_unreachable`, `unexpected_response` or `endpoint_not_allowed`.
    public let outcome: String
    /// A sentence for people.
    public let message: String
    /// The provider's problem, with any echo of the credential removed.
    public let errorMessage: String?
    /// When the check ran.
    public let checkedAt: Date
    /// How long the provider took, in milliseconds.
    public let latencyMilliseconds: Int
    /// What the provider said about the account (AWS: the account id and ARN).
    public let details: [String: JSONValue]

    enum CodingKeys: String, CodingKey {
        case status, outcome, message, details
        case errorMessage = "error_message"
        case checkedAt = "checked_at"
        case latencyMilliseconds = "latency_ms"
    }
}

/// One audit event.
public struct AuditEvent: Sendable, Decodable {
    /// Its id.
    public let id: UUID
    /// Its position in the audit chain.
    public let seq: Int64
    /// When it happened (ISO 8601).
    public let at: String
    /// `user`, `service`, `system` or `operator`.
    public let actorType: String
    /// The actor's id, if any.
    public let actorID: String?
    /// What was done (`integration.create`, `credentials.read`, …).
    public let action: String
    /// The integration concerned, if any.
    public let integrationID: UUID?
    /// `success`, `failure` or `denied`.
    public let outcome: String
    /// The caller's address.
    public let ip: String?
    /// The caller's user agent.
    public let userAgent: String?
    /// More about the event.
    public let detail: [String: JSONValue]

    enum CodingKeys: String, CodingKey {
        case id, seq, at, action, outcome, ip, detail
        case actorType = "actor_type"
        case actorID = "actor_id"
        case integrationID = "integration_id"
        case userAgent = "user_agent"
    }
}

/// A page of audit events.
public struct AuditPage: Sendable, Decodable {
    /// The events, newest first.
    public let events: [AuditEvent]
    /// Pass to the next call for the following page; nil on the last page.
    public let nextCursor: String?

    enum CodingKeys: String, CodingKey {
        case events
        case nextCursor = "next_cursor"
    }
}

/// Decrypted credentials handed to a backend, with the integration's state.
public struct IntegrationCredentials: Sendable, CustomStringConvertible {
    /// The integration.
    public let integrationID: UUID
    /// Its status when read.
    public let status: IntegrationStatus
    /// Which version of the credentials this is.
    public let credentialVersion: Int
    /// The credentials themselves (redacted when printed).
    public let credentials: Credentials

    /// Never shows the credentials.
    public var description: String {
        "IntegrationCredentials(\(integrationID.uuidString.lowercased()), \(credentials.type.rawValue), "
            + "version \(credentialVersion), <redacted>)"
    }
}

/// A new integration: a name and typed credentials (which carry the type and its settings).
public struct NewIntegration: Sendable {
    /// The name, unique per owner; at most 100 characters.
    public var name: String
    /// The credentials and their non-secret settings.
    public var credentials: Credentials

    /// Creates the value.
    public init(name: String, credentials: Credentials) {
        self.name = name
        self.credentials = credentials
    }
}

/// Changes to an integration; nil leaves a property as it is.
public struct IntegrationUpdate: Sendable {
    /// A new name.
    public var name: String?
    /// New credentials (a new secret version, checked again); their settings replace the current ones.
    public var credentials: Credentials?
    /// Turns the integration on or off.
    public var enabled: Bool?

    /// Creates the value.
    public init(name: String? = nil, credentials: Credentials? = nil, enabled: Bool? = nil) {
        self.name = name
        self.credentials = credentials
        self.enabled = enabled
    }
}

/// A JSON value from a response (settings, details).
public enum JSONValue: Sendable, Equatable, Codable {
    /// A string.
    case string(String)
    /// A number.
    case number(Double)
    /// `true` or `false`.
    case bool(Bool)
    /// An array.
    case array([JSONValue])
    /// An object.
    case object([String: JSONValue])
    /// `null`.
    case null

    /// Decodes any JSON value.
    ///
    /// - Throws: `DecodingError` if the input is not JSON.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// Encodes the value as JSON.
    ///
    /// - Throws: `EncodingError` only for numbers JSON cannot hold.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }

    /// The string, if this is one.
    public var stringValue: String? { if case .string(let value) = self { value } else { nil } }
    /// The array, if this is one.
    public var arrayValue: [JSONValue]? { if case .array(let value) = self { value } else { nil } }
    /// The object, if this is one.
    public var objectValue: [String: JSONValue]? { if case .object(let value) = self { value } else { nil } }
}

typealias JSON = JSONValue

/// A workspace's integration template (`/api/templates`): a provider with its settings, rotation policy, limits and
/// the gateway paths its integrations may be called on.
public struct IntegrationTemplate: Sendable, Equatable, Decodable {
    /// Its id.
    public let id: UUID
    /// The workspace it belongs to.
    public let workspaceID: UUID
    /// Unique in the workspace.
    public let name: String
    /// The provider.
    public let type: IntegrationType
    /// An integration's name; `{n}` stands for the first free number.
    public let namePattern: String
    /// The provider's settings.
    public let config: [String: JSONValue]
    /// The rotation policy (`mode`, `every_days`, `grace_hours`).
    public let rotation: [String: JSONValue]
    /// The limits an integration made from it starts with, as the API writes them; nil for none.
    public let limits: [String: JSONValue]?
    /// The gateway paths its integrations may be called on; empty for any.
    public let allowedEndpoints: [String]
    /// When it was created.
    public let createdAt: Date
    /// When it last changed.
    public let updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, name, type, config, rotation, limits
        case workspaceID = "workspace_id"
        case namePattern = "name_pattern"
        case allowedEndpoints = "allowed_endpoints"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }
}

/// A template to save: every field of `PUT /api/templates/{id}` (a save replaces the whole template).
public struct NewTemplate: Sendable, Equatable {
    public var name: String
    public var type: IntegrationType
    public var namePattern: String
    public var config: [String: JSONValue]
    /// `mode` (`off`, `remind`, `automatic`), `every_days`, `grace_hours`; empty for no rotation.
    public var rotation: [String: JSONValue]
    /// `monthly_budget_usd`, `requests_per_minute`, `tokens_per_minute`, `allow_unmetered_endpoints`; nil for none.
    public var limits: [String: JSONValue]?
    public var allowedEndpoints: [String]

    /// Creates a template to save.
    public init(
        name: String, type: IntegrationType, namePattern: String, config: [String: JSONValue] = [:],
        rotation: [String: JSONValue] = [:], limits: [String: JSONValue]? = nil, allowedEndpoints: [String] = []
    ) {
        self.name = name
        self.type = type
        self.namePattern = namePattern
        self.config = config
        self.rotation = rotation
        self.limits = limits
        self.allowedEndpoints = allowedEndpoints
    }

    var body: JSONValue {
        var object: [String: JSONValue] = [
            "name": .string(name), "type": .string(type.rawValue), "name_pattern": .string(namePattern),
            "config": .object(config), "allowed_endpoints": .array(allowedEndpoints.map(JSONValue.string)),
            "limits": limits.map(JSONValue.object) ?? .null,
        ]
        if !rotation.isEmpty { object["rotation"] = .object(rotation) }
        return .object(object)
    }
}

/// `GET /api/templates`.
struct TemplateList: Decodable {
    let templates: [IntegrationTemplate]
}
