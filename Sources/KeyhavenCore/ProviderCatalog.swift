import Foundation
import Synchronization

/// The providers Keyhaven knows, as data (SPEC §16): the built-in catalog (`Resources/providers.json`, checked
/// against `Resources/providers.schema.json` by the tests), and whatever an operator adds with
/// `KEYHAVEN_CATALOG_EXTRA`. An OpenAI-compatible provider is one entry: its key's shape, where it lives, how its
/// key is checked, and what the gateway forwards and meters.
public struct ProviderCatalog: Sendable {
    /// The entries, in the catalog's order (the built-in ones first).
    public let providers: [ProviderEntry]
    private let byID: [String: ProviderEntry]
    /// The origins (`https://llm.internal.example:443`) an operator allows as a custom endpoint's base URL
    /// (`KEYHAVEN_ALLOWED_CUSTOM_HOSTS`); none by default, so no user can point a key at a host of their choosing.
    public private(set) var customOrigins: Set<String> = []

    /// A catalog of `providers`.
    ///
    /// - Throws: ``Invalid`` when an entry breaks a rule its schema cannot express (see ``check()``).
    public init(providers: [ProviderEntry]) throws {
        var byID: [String: ProviderEntry] = [:]
        for entry in providers {
            guard byID[entry.id] == nil else { throw Invalid("the provider \(entry.id) is defined twice") }
            try entry.check()
            byID[entry.id] = entry
        }
        self.providers = providers
        self.byID = byID
    }

    /// The entry of the provider `id`, if the catalog has it.
    public func entry(_ id: String) -> ProviderEntry? { byID[id] }

    /// Why a catalog is refused; the text names the entry and the field.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Parses a catalog file.
    ///
    /// - Throws: ``Invalid`` naming what is wrong: not JSON, a field missing or of the wrong type, or a rule broken.
    public static func parse(_ data: Data) throws -> ProviderCatalog {
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: data)
        } catch let error as DecodingError {
            throw Invalid(Self.describe(error))
        } catch {
            throw Invalid("it is not a JSON catalog")
        }
        guard file.version == 1 else { throw Invalid("version must be 1") }
        return try ProviderCatalog(providers: file.providers)
    }

    /// This catalog allowing custom endpoints at `hosts`: `host`, `host:port` (https) or an origin with its scheme
    /// (`http://10.0.0.5:8000`, for a closed network).
    ///
    /// - Throws: ``Invalid`` naming an entry that is not a host or an origin.
    public func allowing(customHosts hosts: [String]) throws -> ProviderCatalog {
        var catalog = self
        for host in hosts {
            let text = host.contains("://") ? host : "https://" + host
            guard let url = URL(string: text), let origin = Self.origin(url), url.path.isEmpty || url.path == "/",
                url.query == nil, url.user == nil
            else { throw Invalid("\(host.prefix(80)) is not a host or an origin") }
            catalog.customOrigins.insert(origin)
        }
        return catalog
    }

    /// Whether `url` is on an origin the operator allows for custom endpoints.
    public func allowsCustom(_ url: URL) -> Bool {
        Self.origin(url).map(customOrigins.contains) ?? false
    }

    /// `scheme://host:port`, lowercased, with the scheme's port when none is given; nil for anything but http(s).
    static func origin(_ url: URL) -> String? {
        guard let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
            let host = url.host?.lowercased(), !host.isEmpty
        else { return nil }
        return "\(scheme)://\(host):\(url.port ?? (scheme == "https" ? 443 : 80))"
    }

    /// This catalog with `extra`'s entries after its own.
    ///
    /// - Throws: ``Invalid`` when `extra` redefines a provider this catalog has.
    public func adding(_ extra: ProviderCatalog) throws -> ProviderCatalog {
        var catalog = try ProviderCatalog(providers: providers + extra.providers)
        catalog.customOrigins = customOrigins
        return catalog
    }

    private struct File: Decodable {
        var version: Int
        var providers: [ProviderEntry]
    }

    private static func describe(_ error: DecodingError) -> String {
        func at(_ path: [any CodingKey]) -> String {
            path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop { $0 == "." }.description
        }
        switch error {
        case .keyNotFound(let key, let context): return "\(at(context.codingPath + [key])) is missing"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "it is not a JSON catalog" : "\(at(context.codingPath)) is not valid"
        @unknown default: return "it is not a valid catalog"
        }
    }

    // MARK: The process's catalog

    /// The catalog shipped with Keyhaven.
    ///
    /// - Throws: ``Invalid`` if the resource is missing or broken (a build problem the tests catch).
    public static func builtIn() throws -> ProviderCatalog {
        guard let url = Bundle.module.url(forResource: "providers", withExtension: "json"),
            let data = try? Data(contentsOf: url)
        else { throw Invalid("the built-in catalog is missing") }
        return try parse(data)
    }

    private static let installed = Mutex<ProviderCatalog?>(nil)

    /// The catalog this process serves: the built-in one until the composition root installs the operator's
    /// (``install(_:)``), once, before it serves anything. Integration types are checked against it.
    public static var current: ProviderCatalog {
        installed.withLock { installed in
            if let installed { return installed }
            // The built-in resource is checked by the tests; a build without it knows no provider.
            let loaded = (try? builtIn()) ?? ProviderCatalog(unchecked: [])
            installed = loaded
            return loaded
        }
    }

    /// Makes `catalog` the process's catalog (the built-in one with the operator's additions).
    public static func install(_ catalog: ProviderCatalog) {
        installed.withLock { $0 = catalog }
    }

    private init(unchecked providers: [ProviderEntry]) {
        self.providers = providers
        byID = [:]
    }
}

/// One provider of the catalog.
public struct ProviderEntry: Sendable, Decodable, Equatable {
    /// The integration type it defines.
    public let id: String
    /// Its name in each language the interface speaks.
    public let names: Names
    /// Where the new-integration page lists it.
    public let group: Group
    /// The letters of its badge.
    public let mark: String
    /// The shape of its credentials.
    public let credential: CredentialRule
    /// Its non-secret settings (API-key providers; the cloud kinds have theirs in code).
    public let settings: [Setting]
    /// Its API, https; `{name}` as the host's first label stands for the resource-name setting `name` (Azure OpenAI:
    /// `https://{resource}.openai.azure.com`).
    public let baseURL: String
    /// The hosts requests for it may go to.
    public let allowedHosts: [String]
    /// How an API key is sent.
    public let auth: Auth?
    /// How an API key is checked.
    public let verify: Check?
    /// What the gateway forwards for it; nil when it does not.
    public let gateway: GatewayRules?
    /// Its names in LiteLLM's price table.
    public let prices: [String]

    /// The integration type.
    public var type: IntegrationType { IntegrationType(catalogID: id) }

    /// The API of an integration with `config`: the catalog's base URL, or the operator's `override` of it, with
    /// each `{name}` (also percent-encoded) replaced by that setting's value; nil when a value it needs is missing
    /// or malformed.
    public func baseURL(config: [String: JSONValue], override: URL?) -> URL? {
        if let setting = customEndpoint {
            // The integration's own URL, on an origin the operator allows; an override does not apply.
            guard let text = setting.value(in: config), setting.accepts(text), let url = URL(string: text),
                ProviderCatalog.current.allowsCustom(url)
            else { return nil }
            return url
        }
        var text = override?.absoluteString ?? baseURL
        for setting in settings where setting.format == .dnsLabel {
            let marks = ["{\(setting.name)}", "%7B\(setting.name)%7D", "%7b\(setting.name)%7d"]
            guard marks.contains(where: text.contains) else { continue }
            guard let value = setting.value(in: config), setting.accepts(value) else { return nil }
            for mark in marks { text = text.replacingOccurrences(of: mark, with: value) }
        }
        guard !text.contains("{"), !text.contains("%7B"), !text.contains("%7b") else { return nil }
        return URL(string: text)
    }

    /// `template` (a check's path) with each `{name}` replaced by that setting's value in `config` (or `placeholder`,
    /// to check the template's shape); nil when a value is missing or a name is not a setting.
    public func path(_ template: String, config: [String: JSONValue], placeholder: String? = nil) -> String? {
        var text = template
        while let open = text.firstIndex(of: "{"), let close = text[open...].firstIndex(of: "}") {
            let name = String(text[text.index(after: open)..<close])
            guard let setting = settings.first(where: { $0.name == name && $0.format != .url }),
                let value = placeholder ?? setting.value(in: config)
            else { return nil }
            text.replaceSubrange(open...close, with: value)
        }
        return text
    }

    /// The setting whose value is the whole base URL (`"base_url": "{name}"`): a custom endpoint's.
    public var customEndpoint: Setting? {
        guard baseURL.hasPrefix("{"), baseURL.hasSuffix("}") else { return nil }
        let name = String(baseURL.dropFirst().dropLast())
        return settings.first { $0.name == name && $0.format == .url && $0.required }
    }

    /// The query parameters every request of an integration with `config` carries (an Azure `api-version`).
    public func queryParameters(config: [String: JSONValue]) -> [(String, String)] {
        settings.compactMap { setting in
            guard let name = setting.query, let value = setting.value(in: config) else { return nil }
            return (name, value)
        }
    }

    /// English and Spanish names.
    public struct Names: Sendable, Decodable, Equatable {
        public let en: String
        public let es: String
    }

    /// The new-integration page's groups.
    public enum Group: String, Sendable, Decodable, CaseIterable {
        case ai
        case cloud
    }

    /// The kinds of credentials, each with its own validation and verification.
    public enum Kind: String, Sendable, Decodable {
        case apiKey = "api_key"
        case googleServiceAccount = "google_service_account"
        case awsKeys = "aws_keys"
        case azureServicePrincipal = "azure_service_principal"
    }

    /// A key's shape: its kind, and for an API key its prefix, length and the example shown when it is wrong.
    public struct CredentialRule: Sendable, Decodable, Equatable {
        public let kind: Kind
        public let prefix: String
        public let minLength: Int
        public let maxLength: Int
        public let example: String
        /// The problem code a malformed key is reported with.
        public let problem: String

        enum CodingKeys: String, CodingKey {
            case kind, prefix, example, problem
            case minLength = "min_length"
            case maxLength = "max_length"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            kind = try container.decode(Kind.self, forKey: .kind)
            prefix = try container.decodeIfPresent(String.self, forKey: .prefix) ?? ""
            minLength = try container.decodeIfPresent(Int.self, forKey: .minLength) ?? 20
            maxLength = try container.decodeIfPresent(Int.self, forKey: .maxLength) ?? 512
            example = try container.decodeIfPresent(String.self, forKey: .example) ?? (prefix + "…")
            problem = try container.decodeIfPresent(String.self, forKey: .problem) ?? "api_key"
        }
    }

    /// A non-secret setting of an API-key provider: an id with an optional prefix (at most 64 letters, digits, - and
    /// _), a resource name (a DNS label, filled into the base URL), or an API version (`2024-10-21`, `-preview`
    /// allowed). Sent as `header`, or as the query parameter `query`, when named.
    public struct Setting: Sendable, Decodable, Equatable {
        /// What a value must look like.
        public enum Format: String, Sendable, Decodable {
            case id
            case dnsLabel = "dns_label"
            case apiVersion = "api_version"
            /// An http(s) URL (a custom endpoint's base URL), which the operator must also allow.
            case url
        }

        public let name: String
        public let format: Format
        public let prefix: String
        public let header: String?
        public let query: String?
        public let required: Bool
        /// The value used when an integration has none.
        public let defaultValue: String?
        public let problem: String

        enum CodingKeys: String, CodingKey {
            case name, format, prefix, header, query, required, problem
            case defaultValue = "default"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            name = try container.decode(String.self, forKey: .name)
            format = try container.decodeIfPresent(Format.self, forKey: .format) ?? .id
            prefix = try container.decodeIfPresent(String.self, forKey: .prefix) ?? ""
            header = try container.decodeIfPresent(String.self, forKey: .header)
            query = try container.decodeIfPresent(String.self, forKey: .query)
            required = try container.decodeIfPresent(Bool.self, forKey: .required) ?? false
            defaultValue = try container.decodeIfPresent(String.self, forKey: .defaultValue)
            problem = try container.decodeIfPresent(String.self, forKey: .problem) ?? "invalid"
        }

        /// Whether `text` is a value of this setting.
        public func accepts(_ text: String) -> Bool {
            let bytes = Array(text.utf8)
            switch format {
            case .id:
                return text.hasPrefix(prefix) && !bytes.isEmpty && bytes.count <= 64
                    && bytes.allSatisfy(ASCII.isKeyCharacter)
            case .dnsLabel:
                return (2...63).contains(bytes.count) && bytes.first != UInt8(ascii: "-")
                    && bytes.last != UInt8(ascii: "-")
                    && bytes.allSatisfy { ASCII.isLower($0) || ASCII.isDigit($0) || $0 == UInt8(ascii: "-") }
            case .url:
                guard bytes.count <= 200, bytes.allSatisfy(ASCII.isVisible), let url = URL(string: text),
                    ProviderCatalog.origin(url) != nil, url.user == nil, url.password == nil, url.query == nil,
                    url.fragment == nil
                else { return false }
                return true
            case .apiVersion:
                // YYYY-MM-DD, optionally followed by -preview.
                let date = bytes.prefix(10)
                let rest = String(decoding: bytes.dropFirst(10), as: UTF8.self)
                return date.count == 10 && (rest.isEmpty || rest == "-preview")
                    && date.enumerated().allSatisfy { index, byte in
                        index == 4 || index == 7 ? byte == UInt8(ascii: "-") : ASCII.isDigit(byte)
                    }
            }
        }

        /// The value an integration with `config` has: its own, else the default; nil when neither is valid.
        public func value(in config: [String: JSONValue]) -> String? {
            if let own = config[name]?.stringValue { return accepts(own) ? own : nil }
            return defaultValue
        }
    }

    /// The header an API key goes in, after `scheme` and a space when there is one.
    public struct Auth: Sendable, Decodable, Equatable {
        public let header: String
        public let scheme: String?

        /// The header's value for `key`.
        public func value(_ key: String) -> String { scheme.map { "\($0) \(key)" } ?? key }
    }

    /// The check of an API key: GET `path`; a 2xx answer holding `foundAt` (a JSON pointer) is connected.
    public struct Check: Sendable, Decodable, Equatable {
        public let path: String
        public let foundAt: String
        public let headers: [String: String]
        /// Query parameters of the check (they win over settings sent as the same parameter).
        public let query: [String: String]
        public let refusals: [Refusal]

        /// An answer that means something other than its status says.
        public struct Refusal: Sendable, Decodable, Equatable {
            public let status: Int
            public let messageContains: [String]
            public let outcome: String

            enum CodingKeys: String, CodingKey {
                case status, outcome
                case messageContains = "message_contains"
            }
        }

        enum CodingKeys: String, CodingKey {
            case path, headers, query, refusals
            case foundAt = "found_at"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            path = try container.decode(String.self, forKey: .path)
            foundAt = try container.decode(String.self, forKey: .foundAt)
            headers = try container.decodeIfPresent([String: String].self, forKey: .headers) ?? [:]
            query = try container.decodeIfPresent([String: String].self, forKey: .query) ?? [:]
            refusals = try container.decodeIfPresent([Refusal].self, forKey: .refusals) ?? []
        }
    }

    /// How the gateway reads usage from answers.
    public enum UsageFormat: String, Sendable, Decodable {
        case openai
        case anthropic
        case gemini
        /// Cohere's `billed_units` (in `usage`, a stream's `message-end` delta, or v1's `meta`).
        case cohere
    }

    /// What the gateway forwards and meters.
    public struct GatewayRules: Sendable, Decodable, Equatable {
        public let usage: UsageFormat
        public let metered: [MeteredPath]
        public let free: [PathPattern]

        /// A metered path; `streamUsageOption` when the provider takes `stream_options.include_usage`.
        public struct MeteredPath: Sendable, Decodable, Equatable {
            public let path: PathPattern
            public let streamUsageOption: Bool

            enum CodingKeys: String, CodingKey {
                case path
                case streamUsageOption = "stream_usage_option"
            }

            public init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                path = try container.decode(PathPattern.self, forKey: .path)
                streamUsageOption = try container.decodeIfPresent(Bool.self, forKey: .streamUsageOption) ?? false
            }
        }

        enum CodingKeys: String, CodingKey { case usage, metered, free }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            usage = try container.decode(UsageFormat.self, forKey: .usage)
            metered = try container.decode([MeteredPath].self, forKey: .metered)
            free = try container.decodeIfPresent([PathPattern].self, forKey: .free) ?? []
        }
    }

    enum CodingKeys: String, CodingKey {
        case id, names, group, mark, credential, settings, auth, verify, gateway, prices
        case baseURL = "base_url"
        case allowedHosts = "allowed_hosts"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        names = try container.decode(Names.self, forKey: .names)
        group = try container.decode(Group.self, forKey: .group)
        mark = try container.decode(String.self, forKey: .mark)
        credential = try container.decode(CredentialRule.self, forKey: .credential)
        settings = try container.decodeIfPresent([Setting].self, forKey: .settings) ?? []
        baseURL = try container.decode(String.self, forKey: .baseURL)
        allowedHosts = try container.decode([String].self, forKey: .allowedHosts)
        auth = try container.decodeIfPresent(Auth.self, forKey: .auth)
        verify = try container.decodeIfPresent(Check.self, forKey: .verify)
        gateway = try container.decodeIfPresent(GatewayRules.self, forKey: .gateway)
        prices = try container.decodeIfPresent([String].self, forKey: .prices) ?? []
    }

    /// The rules of SPEC §16 that a decoder does not check: the id's and names' shapes, an https base URL on one of
    /// the allowed hosts, an API-key provider with a way to send and check its key, and lengths that fit.
    func check() throws {
        func fail(_ why: String) -> ProviderCatalog.Invalid { ProviderCatalog.Invalid("\(id): \(why)") }
        let idBytes = Array(id.utf8)
        guard (2...40).contains(idBytes.count), idBytes.first.map(ASCII.isLower) == true,
            idBytes.allSatisfy({ ASCII.isLower($0) || ASCII.isDigit($0) || $0 == UInt8(ascii: "_") })
        else { throw ProviderCatalog.Invalid("\(id.prefix(40)): the id must be lowercase letters, digits and _") }
        for name in [names.en, names.es, mark, credential.example]
        where name.isEmpty || name.utf8.count > 80 || name.unicodeScalars.contains(where: { $0.value < 0x20 }) {
            throw fail("a name, mark or example is empty, too long or holds control characters")
        }
        // A template's one placeholder is the host's first label, filled by a resource-name setting, under an
        // allowed host: a value cannot move the request anywhere else.
        var concrete = baseURL
        if baseURL.hasPrefix("{") {
            // A custom endpoint: the whole base URL is a required url setting, checked against the operator's list.
            guard customEndpoint != nil, allowedHosts.isEmpty else {
                throw fail("\"{name}\" as base_url must name a required url setting, with no allowed_hosts")
            }
            concrete = "https://custom.invalid"
        } else if let open = baseURL.firstIndex(of: "{"), let close = baseURL.firstIndex(of: "}"), open < close {
            // The placeholder starts the host's first label (`{resource}.openai.azure.com`,
            // `{region}-aiplatform.googleapis.com`), and its setting is a DNS label with a value always.
            let name = String(baseURL[baseURL.index(after: open)..<close])
            let rest = baseURL[baseURL.index(after: close)...]
            guard baseURL[..<open] == "https://", rest.hasPrefix(".") || rest.hasPrefix("-"),
                settings.contains(where: {
                    $0.name == name && $0.format == .dnsLabel && ($0.required || $0.defaultValue != nil)
                })
            else { throw fail("a {setting} in base_url must start the host's first label, a dns_label with a value") }
            concrete = "https://example" + rest
        }
        guard !concrete.contains("{"), !concrete.contains("}"), let url = URL(string: concrete), url.scheme == "https",
            let host = url.host?.lowercased(), url.query == nil, url.user == nil,
            allowedHosts.contains(host)
                || (concrete != baseURL
                    && allowedHosts.contains { host.hasSuffix("." + $0) || host.hasSuffix("-" + $0) })
                || customEndpoint != nil
        else { throw fail("base_url must be https on one of allowed_hosts") }
        guard allowedHosts.allSatisfy({ !$0.isEmpty && $0 == $0.lowercased() && $0.utf8.allSatisfy(Self.isHostByte) })
        else { throw fail("allowed_hosts must be lowercase host names") }
        guard credential.prefix.utf8.allSatisfy(ASCII.isKeyCharacter), credential.minLength >= 8,
            credential.maxLength >= credential.minLength, credential.maxLength <= 512,
            credential.prefix.utf8.count < credential.minLength,
            ["api_key", "gemini_key"].contains(credential.problem)
        else { throw fail("the credential's prefix and lengths do not fit together") }
        if credential.kind == .apiKey {
            guard let auth, auth.header.utf8.allSatisfy(ASCII.isKeyCharacter),
                auth.scheme == nil || auth.scheme == "Bearer"
            else { throw fail("an API-key provider needs auth.header") }
            guard let verify else { throw fail("an API-key provider needs verify") }
            guard verify.headers.count <= 5,
                verify.headers.allSatisfy({
                    $0.key.utf8.allSatisfy(ASCII.isKeyCharacter) && !$0.value.isEmpty
                        && $0.value.utf8.allSatisfy(ASCII.isPrintable)
                })
            else { throw fail("verify.headers must be plain header names and printable values") }
            guard
                verify.refusals.allSatisfy({ ["invalid_credentials", "insufficient_permissions"].contains($0.outcome) })
            else { throw fail("a refusal's outcome is invalid_credentials or insufficient_permissions") }
        } else if gateway != nil && credential.kind != .googleServiceAccount {
            throw fail("the gateway forwards with API keys and service accounts only")
        }
        if let verify {
            // A check's path may name settings (`/v1/projects/{project}/…`); filled in, it is a plain path.
            guard let filled = path(verify.path, config: [:], placeholder: "x"), PathPattern.isPlainPath(filled) else {
                throw fail("verify.path must be a plain path, with {setting} for settings")
            }
            guard verify.foundAt.isEmpty || verify.foundAt.hasPrefix("/") else {
                throw fail("found_at is a JSON pointer")
            }
        }
        var seen = Set<String>()
        for setting in settings {
            guard seen.insert(setting.name).inserted, setting.name.utf8.allSatisfy(ASCII.isFieldNameCharacter),
                setting.prefix.utf8.allSatisfy(ASCII.isKeyCharacter),
                setting.header.map({ $0.utf8.allSatisfy(ASCII.isKeyCharacter) }) ?? true,
                setting.query.map({ !$0.isEmpty && $0.utf8.allSatisfy(ASCII.isKeyCharacter) }) ?? true,
                setting.defaultValue.map(setting.accepts) ?? true, !(setting.required && setting.defaultValue != nil)
            else { throw fail("the setting \(setting.name.prefix(40)) is not valid") }
        }
        if let verify {
            guard verify.query.count <= 5,
                verify.query.allSatisfy({
                    $0.key.utf8.allSatisfy(ASCII.isKeyCharacter)
                        && !$0.value.isEmpty && $0.value.utf8.allSatisfy(ASCII.isKeyCharacter)
                })
            else { throw fail("verify.query must be plain names and values") }
        }
        if let gateway, gateway.metered.isEmpty { throw fail("gateway.metered must name a path") }
    }

    private static func isHostByte(_ byte: UInt8) -> Bool {
        ASCII.isLower(byte) || ASCII.isDigit(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
    }
}

/// A gateway path rule: `/v1/chat/completions`, or with `*` for one segment (or a segment's start, before a fixed
/// suffix: `*:generateContent`) and `{a,b}` for one of several names.
public struct PathPattern: Sendable, Decodable, Equatable {
    /// One segment's rule.
    enum Segment: Sendable, Equatable {
        case literal(String)
        case oneOf([String])
        /// Any non-empty text, then `suffix`.
        case any(suffix: String)
    }

    let segments: [Segment]
    /// The pattern as written.
    public let text: String

    /// Parses `text`.
    ///
    /// - Throws: ``ProviderCatalog/Invalid`` when it is not a pattern.
    public init(_ text: String) throws {
        guard text.hasPrefix("/"), text.utf8.count <= 200 else {
            throw ProviderCatalog.Invalid("the path \(text.prefix(60)) must start with /")
        }
        var segments: [Segment] = []
        for part in text.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            let part = String(part)
            guard !part.isEmpty, part != ".", part != ".." else {
                throw ProviderCatalog.Invalid("the path \(text.prefix(60)) has an empty or dot segment")
            }
            if part.hasPrefix("{"), part.hasSuffix("}") {
                let names = part.dropFirst().dropLast().split(separator: ",").map(String.init)
                guard !names.isEmpty, names.allSatisfy(Self.isPlainSegment) else {
                    throw ProviderCatalog.Invalid("the path \(text.prefix(60)) has a bad {…} segment")
                }
                segments.append(.oneOf(names))
            } else if part.hasPrefix("*") {
                let suffix = String(part.dropFirst())
                guard suffix.isEmpty || Self.isPlainSegment(suffix) else {
                    throw ProviderCatalog.Invalid("the path \(text.prefix(60)) has a bad * segment")
                }
                segments.append(.any(suffix: suffix))
            } else {
                guard Self.isPlainSegment(part) else {
                    throw ProviderCatalog.Invalid("the path \(text.prefix(60)) has characters a rule cannot hold")
                }
                segments.append(.literal(part))
            }
        }
        self.segments = segments
        self.text = text
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            try self.init(text)
        } catch {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "not a path rule"))
        }
    }

    /// Whether `path` (already checked to be a safe path) matches.
    public func matches(_ path: String) -> Bool {
        let parts = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == segments.count else { return false }
        for (part, segment) in zip(parts, segments) {
            switch segment {
            case .literal(let text): if part != text { return false }
            case .oneOf(let names): if !names.contains(where: { $0 == part }) { return false }
            case .any(let suffix):
                guard part.count > suffix.count, part.hasSuffix(suffix) else { return false }
                // The wildcard part itself holds no `:` when a suffix starts with one (a model, then its method).
                if suffix.hasPrefix(":"), part.dropLast(suffix.count).contains(":") { return false }
            }
        }
        return true
    }

    /// Whether `text` is a path with no pattern in it.
    static func isPlainPath(_ text: String) -> Bool {
        guard let pattern = try? PathPattern(text) else { return false }
        return pattern.segments.allSatisfy { if case .literal = $0 { true } else { false } }
    }

    private static func isPlainSegment(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { ASCII.isAlphanumeric($0) || "-._~:@".utf8.contains($0) }
    }
}
