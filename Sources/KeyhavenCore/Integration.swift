import Foundation

/// A provider Keyhaven stores credentials for: the id of a ``ProviderCatalog`` entry (SPEC §16). Adding an
/// OpenAI-compatible provider is adding a catalog entry; the cloud kinds have their verifiers in code.
public struct IntegrationType: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    /// The catalog id, as stored and sent in the API.
    public let rawValue: String

    /// The type of a provider the process's catalog has; nil for any other text.
    public init?(rawValue: String) {
        guard ProviderCatalog.current.entry(rawValue) != nil else { return nil }
        self.rawValue = rawValue
    }

    /// The type of a stored row, whether or not the catalog still has its provider (an operator may remove an
    /// entry of theirs): nil only for text that is not an id at all.
    public init?(stored text: String) {
        let bytes = Array(text.utf8)
        guard (2...40).contains(bytes.count), bytes.first.map(ASCII.isLower) == true,
            bytes.allSatisfy({ ASCII.isLower($0) || ASCII.isDigit($0) || $0 == UInt8(ascii: "_") })
        else { return nil }
        rawValue = text
    }

    init(catalogID: String) {
        rawValue = catalogID
    }

    public var description: String { rawValue }

    /// Its catalog entry; nil when the catalog no longer has it.
    public var entry: ProviderEntry? { ProviderCatalog.current.entry(rawValue) }

    /// Every type of the process's catalog, in its order.
    public static var allCases: [IntegrationType] { ProviderCatalog.current.providers.map(\.type) }

    public static let openai = IntegrationType(catalogID: "openai")
    public static let anthropic = IntegrationType(catalogID: "anthropic")
    public static let gemini = IntegrationType(catalogID: "gemini")
    public static let googleCloud = IntegrationType(catalogID: "google_cloud")
    public static let aws = IntegrationType(catalogID: "aws")
    public static let azure = IntegrationType(catalogID: "azure")
}

/// Where an integration stands (SPEC §6); the UI shows Verificando / Conectado / Error / Deshabilitado.
public enum IntegrationStatus: String, Sendable, Codable {
    case verifying
    case connected
    case error
    case disabled
}

/// One stored integration: everything about it except the credentials themselves.
public struct Integration: Sendable, Equatable {
    /// Its id (time-ordered, so newer integrations sort first).
    public var id: UUID
    /// The user who owns it.
    public var ownerID: UUID
    /// A name unique among the owner's integrations.
    public var name: String
    /// The provider.
    public var type: IntegrationType
    /// Where it stands.
    public var status: IntegrationStatus
    /// False once the user disables it.
    public var enabled: Bool
    /// Non-secret settings (an OpenAI organization, an AWS region).
    public var config: [String: JSONValue]
    /// At most the last 4 characters of a secret, or a non-secret identifier.
    public var credentialHint: String?
    /// The current secret version (0 before the first).
    public var credentialVersion: Int
    /// Why the last verification failed, with any echo of the credential removed.
    public var errorMessage: String?
    /// When the credentials were last verified.
    public var lastVerifiedAt: Date?
    /// When a backend last read the credentials.
    public var lastUsedAt: Date?
    /// When it was created.
    public var createdAt: Date
    /// When it last changed.
    public var updatedAt: Date
    /// How its credentials are renewed.
    public var rotation: RotationPolicy = .off
    /// When the current credentials were stored (nil before the first).
    public var credentialsChangedAt: Date?
    /// Why a rotation could not delete a credential it replaced at the provider yet (it keeps trying); nil when
    /// nothing waits to be retired, or it is going well.
    public var retireError: String?
    /// Why the last check failed, with codes an interface can translate; nil when `errorMessage` was written by
    /// something else (or before problems were kept).
    public var verificationProblem: VerificationProblem?

    /// Whether the credentials are old enough for their rotation policy.
    public func rotationDue(now: Date = Date()) -> Bool {
        guard let changed = credentialsChangedAt, let due = rotation.dueDate(after: changed) else { return false }
        return due <= now
    }

    /// Creates an integration value.
    public init(
        id: UUID, ownerID: UUID, name: String, type: IntegrationType, status: IntegrationStatus, enabled: Bool,
        config: [String: JSONValue], credentialHint: String?, credentialVersion: Int, errorMessage: String?,
        lastVerifiedAt: Date?, lastUsedAt: Date?, createdAt: Date, updatedAt: Date
    ) {
        self.id = id
        self.ownerID = ownerID
        self.name = name
        self.type = type
        self.status = status
        self.enabled = enabled
        self.config = config
        self.credentialHint = credentialHint
        self.credentialVersion = credentialVersion
        self.errorMessage = errorMessage
        self.lastVerifiedAt = lastVerifiedAt
        self.lastUsedAt = lastUsedAt
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// A JSON value, for non-secret configuration and audit details.
public enum JSONValue: Sendable, Equatable, Codable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case array([JSONValue])
    case object([String: JSONValue])
    case null

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let bool = try? container.decode(Bool.self) {
            self = .bool(bool)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let string = try? container.decode(String.self) {
            self = .string(string)
        } else if let array = try? container.decode([JSONValue].self) {
            self = .array(array)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

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
    public var stringValue: String? {
        if case .string(let value) = self { value } else { nil }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements) { first, _ in first })
    }
}

extension UUID {
    /// A version 7 UUID: 48 bits of Unix milliseconds, then random bits, so ids sort by creation time.
    public static func timeOrdered(now: Date = Date()) -> UUID {
        let milliseconds = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255) }
        for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: milliseconds >> (8 * (5 - index))) }
        bytes[6] = (bytes[6] & 0x0F) | 0x70
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        return UUID(
            uuid: (
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]
            ))
    }
}
