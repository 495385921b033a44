import Foundation

/// Decrypted provider credentials, typed per provider (SPEC §6).
///
/// Never printable (`<redacted>` everywhere) and deliberately not `Encodable`: the only way out of the process is
/// ``serialized()`` into the sealed store, and the service-only credentials route, which builds its JSON
/// explicitly.
public enum Credentials: Sendable, RedactedDescription {
    /// An API key (OpenAI, Anthropic, Gemini).
    case apiKey(String)
    /// A Google Cloud service-account key file, with every field it came with.
    case googleServiceAccount([String: JSONValue])
    /// AWS access keys.
    case aws(accessKeyID: String, secretAccessKey: String, sessionToken: String?)
    /// An Azure service principal's client secret.
    case azure(tenantID: String, clientID: String, clientSecret: String)

    /// The bytes that are sealed: the canonical JSON of the credentials. The encoder's output buffer becomes the
    /// `SecretBytes` itself (zeroed when released); no other copy is made here.
    ///
    /// - Throws: `KeyhavenError.internalError` if the value cannot be encoded (it always can: every field is text).
    public func serialized() throws -> SecretBytes {
        do {
            return SecretBytes(taking: try Self.encoder.encode(wireValue))
        } catch {
            throw KeyhavenError.internalError
        }
    }

    /// Reads back stored credentials of an integration of `type`, checking only their shape (which fields are
    /// text), never the format rules for new input: tightening a rule later must not make a stored secret fail to
    /// open. The JSON is parsed straight from the `SecretBytes` buffer (``JSONValue/init(parsing:)``), without
    /// copying it first and without a `Decoder`.
    ///
    /// - Throws: `KeyhavenError.decryptionFailed` if the bytes are not credentials of that type.
    public init(type: IntegrationType, stored bytes: SecretBytes) throws {
        guard let value = bytes.withUnsafeBytes({ try? JSONValue(parsing: $0) }) else {
            throw KeyhavenError.decryptionFailed
        }
        switch (type.entry?.credential.kind ?? Self.kind(ofStored: value), value) {
        case (.apiKey, .string(let key)):
            self = .apiKey(key)
        case (.googleServiceAccount, .object(let fields)):
            self = .googleServiceAccount(fields)
        case (.awsKeys, .object(let fields)):
            guard let accessKeyID = fields["access_key_id"]?.stringValue,
                let secret = fields["secret_access_key"]?.stringValue
            else { throw KeyhavenError.decryptionFailed }
            self = .aws(
                accessKeyID: accessKeyID, secretAccessKey: secret, sessionToken: fields["session_token"]?.stringValue)
        case (.azureServicePrincipal, .object(let fields)):
            guard let tenant = fields["tenant_id"]?.stringValue, let client = fields["client_id"]?.stringValue,
                let secret = fields["client_secret"]?.stringValue
            else { throw KeyhavenError.decryptionFailed }
            self = .azure(tenantID: tenant, clientID: client, clientSecret: secret)
        default:
            throw KeyhavenError.decryptionFailed
        }
    }

    /// The kind stored credentials have by their shape alone, for an integration whose provider the catalog no
    /// longer has: its key can still be read by the backend that uses it.
    private static func kind(ofStored value: JSONValue) -> ProviderEntry.Kind? {
        switch value {
        case .string: .apiKey
        case .object(let fields) where fields["access_key_id"] != nil: .awsKeys
        case .object(let fields) where fields["tenant_id"] != nil: .azureServicePrincipal
        case .object(let fields) where fields["type"]?.stringValue == "service_account": .googleServiceAccount
        default: nil
        }
    }

    /// The JSON the credentials route returns (and that is sealed): a string for API keys, an object otherwise.
    public var wireValue: JSONValue {
        switch self {
        case .apiKey(let key): .string(key)
        case .googleServiceAccount(let fields): .object(fields)
        case .aws(let accessKeyID, let secretAccessKey, let sessionToken):
            .object(
                ["access_key_id": .string(accessKeyID), "secret_access_key": .string(secretAccessKey)].merging(
                    sessionToken.map { ["session_token": .string($0)] } ?? [:]
                ) { first, _ in first })
        case .azure(let tenantID, let clientID, let clientSecret):
            .object([
                "tenant_id": .string(tenantID), "client_id": .string(clientID), "client_secret": .string(clientSecret),
            ])
        }
    }

    /// What the UI may show: at most the last 4 characters of a secret, or a non-secret identifier.
    public var hint: String {
        switch self {
        case .apiKey(let key):
            let prefix =
                key.hasPrefix("sk-ant-")
                ? "sk-ant-" : key.hasPrefix("sk-") ? "sk-" : key.hasPrefix("AIza") ? "AIza" : ""
            return "\(prefix)…\(key.suffix(4))"
        case .googleServiceAccount(let fields): return fields["client_email"]?.stringValue ?? "service account"
        case .aws(let accessKeyID, _, _): return "\(accessKeyID.prefix(4))…\(accessKeyID.suffix(4))"
        case .azure(_, let clientID, _): return "client \(clientID)"
        }
    }

    /// Every secret string inside, for scrubbing them out of provider error messages.
    public var secretValues: [String] {
        switch self {
        case .apiKey(let key): [key]
        case .googleServiceAccount(let fields):
            [fields["private_key"]?.stringValue, fields["private_key_id"]?.stringValue].compactMap { $0 }
        case .aws(_, let secret, let token): [secret] + (token.map { [$0] } ?? [])
        case .azure(_, _, let secret): [secret]
        }
    }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}

/// Checks submitted credentials and configuration per provider; every problem is reported against its field.
///
/// Every rule works on UTF-8 bytes with explicit ASCII ranges, so no Unicode digit, look-alike letter, line break
/// or control character passes where a provider expects plain ASCII.
public enum CredentialValidator {
    /// Field names used in validation errors: `credentials` for key strings, `credentials.<name>` inside objects.
    public static func validate(type: IntegrationType, _ value: JSONValue) -> Result<Credentials, FieldErrors> {
        var errors = FieldErrors()
        guard let rule = type.entry?.credential else {
            errors.add(FieldProblem(.invalid, "is not a provider this server knows"), to: "type")
            return .failure(errors)
        }
        switch rule.kind {
        case .apiKey:
            return apiKey(value, rule: rule)
        case .awsKeys:
            guard case .object(let fields) = value else {
                errors.add(
                    FieldProblem(.awsObject, "must be an object with access_key_id and secret_access_key"),
                    to: "credentials")
                return .failure(errors)
            }
            let accessKeyID = fields["access_key_id"]?.stringValue ?? ""
            let secret = fields["secret_access_key"]?.stringValue ?? ""
            var sessionToken: String?
            if !(accessKeyID.utf8.count == 20 && (accessKeyID.hasPrefix("AKIA") || accessKeyID.hasPrefix("ASIA"))
                && accessKeyID.utf8.allSatisfy(ASCII.isUpperAlphanumeric))
            {
                errors.add(
                    FieldProblem(.awsAccessKeyID, "must be 20 characters starting with AKIA or ASIA"),
                    to: "credentials.access_key_id")
            }
            if !(secret.utf8.count == 40 && secret.utf8.allSatisfy(ASCII.isBase64)) {
                errors.add(
                    FieldProblem(.awsSecretAccessKey, "must be exactly 40 characters (letters, digits, + and /)"),
                    to: "credentials.secret_access_key")
            }
            switch fields["session_token"] {
            case nil, .null?:
                if accessKeyID.hasPrefix("ASIA") {
                    errors.add(
                        FieldProblem(.awsSessionTokenRequired, "is required for temporary (ASIA…) keys"),
                        to: "credentials.session_token")
                }
            case .string(let token)?
            where !token.isEmpty && token.utf8.count <= 4096 && token.utf8.allSatisfy(ASCII.isBase64):
                sessionToken = token
            default:
                errors.add(
                    FieldProblem(.awsSessionToken, "must be the session token (letters, digits, +, / and =)"),
                    to: "credentials.session_token")
            }
            errors.rejectUnknown(
                fields, allowed: ["access_key_id", "secret_access_key", "session_token"], prefix: "credentials")
            return errors.isEmpty
                ? .success(.aws(accessKeyID: accessKeyID, secretAccessKey: secret, sessionToken: sessionToken))
                : .failure(errors)
        case .azureServicePrincipal:
            guard case .object(let fields) = value else {
                errors.add(
                    FieldProblem(.azureObject, "must be an object with tenant_id, client_id and client_secret"),
                    to: "credentials")
                return .failure(errors)
            }
            let tenant = fields["tenant_id"]?.stringValue ?? ""
            let client = fields["client_id"]?.stringValue ?? ""
            let secret = fields["client_secret"]?.stringValue ?? ""
            if !ASCII.isGUID(tenant) {
                errors.add(
                    FieldProblem(.azureTenantID, "must be a GUID (the directory's tenant id)"),
                    to: "credentials.tenant_id")
            }
            if !ASCII.isGUID(client) {
                errors.add(
                    FieldProblem(.azureClientID, "must be a GUID (the application's client id)"),
                    to: "credentials.client_id")
            }
            if secret.isEmpty || secret.utf8.count > 1024 || !secret.utf8.allSatisfy(ASCII.isVisible) {
                errors.add(
                    FieldProblem(.azureClientSecret, "must be the client secret's value (visible ASCII characters)"),
                    to: "credentials.client_secret")
            }
            errors.rejectUnknown(fields, allowed: ["tenant_id", "client_id", "client_secret"], prefix: "credentials")
            return errors.isEmpty
                ? .success(.azure(tenantID: tenant.lowercased(), clientID: client.lowercased(), clientSecret: secret))
                : .failure(errors)
        case .googleServiceAccount:
            return serviceAccount(value)
        }
    }

    /// A key string of the catalog's shape: its prefix, a length within its bounds, letters, digits, - and _.
    private static func apiKey(_ value: JSONValue, rule: ProviderEntry.CredentialRule)
        -> Result<Credentials, FieldErrors>
    {
        guard case .string(let key) = value, key.hasPrefix(rule.prefix),
            (rule.minLength...rule.maxLength).contains(key.utf8.count), key.utf8.allSatisfy(ASCII.isKeyCharacter)
        else {
            var errors = FieldErrors()
            if rule.problem == FieldProblem.Code.geminiKey.rawValue {
                errors.add(
                    FieldProblem(.geminiKey, "must be a Gemini API key: AIza followed by 35 letters, digits, - or _"),
                    to: "credentials")
            } else {
                errors.add(.apiKey(example: rule.example), to: "credentials")
            }
            return .failure(errors)
        }
        return .success(.apiKey(key))
    }

    private static func serviceAccount(_ value: JSONValue) -> Result<Credentials, FieldErrors> {
        var errors = FieldErrors()
        var object: [String: JSONValue]
        switch value {
        case .object(let fields): object = fields
        case .string(let text) where text.utf8.count <= 16_384:
            guard case .object(let fields)? = try? JSONValue(parsing: text) else {
                errors.add(.serviceAccountFile, to: "credentials")
                return .failure(errors)
            }
            object = fields
        default:
            errors.add(.serviceAccountFile, to: "credentials")
            return .failure(errors)
        }
        if object.count > 32 {
            errors.add(
                FieldProblem(.serviceAccountFields, "has too many fields for a service account key"), to: "credentials")
            return .failure(errors)
        }
        // Every field of a key file is text; only the private key spans lines.
        for (key, field) in object where key != "private_key" {
            guard !key.isEmpty, key.utf8.count <= 64, key.utf8.allSatisfy(ASCII.isFieldNameCharacter) else {
                errors.add(
                    FieldProblem(.serviceAccountFieldName, "has a field name that is not a service account key field"),
                    to: "credentials")
                continue
            }
            guard let text = field.stringValue, text.utf8.count <= 2048, text.utf8.allSatisfy(ASCII.isPrintable) else {
                errors.add(
                    FieldProblem(.singleLineText, "must be text without line breaks or control characters"),
                    to: "credentials.\(key)")
                continue
            }
        }
        if object["type"]?.stringValue != "service_account" {
            errors.add(FieldProblem(.serviceAccountType, "must be \"service_account\""), to: "credentials.type")
        }
        let email = object["client_email"]?.stringValue ?? ""
        let atSigns = email.utf8.filter { $0 == 0x40 }.count
        if !(atSigns == 1 && email.utf8.count <= 320 && email.utf8.allSatisfy(ASCII.isVisible)) {
            errors.add(
                FieldProblem(.serviceAccountEmail, "must be the service account's email"),
                to: "credentials.client_email")
        }
        if !isPEMPrivateKey(object["private_key"]?.stringValue ?? "") {
            errors.add(
                FieldProblem(.pemPrivateKey, "must be a PEM private key (-----BEGIN PRIVATE KEY-----)"),
                to: "credentials.private_key")
        }
        let keyID = object["private_key_id"]?.stringValue ?? ""
        if keyID.isEmpty || keyID.utf8.count > 128 || !keyID.utf8.allSatisfy(ASCII.isKeyCharacter) {
            errors.add(
                FieldProblem(.privateKeyID, "must be the key's id (letters, digits, - and _)"),
                to: "credentials.private_key_id")
        }
        if let uri = object["token_uri"] {
            let text = uri.stringValue ?? ""
            let url = text.utf8.allSatisfy(ASCII.isVisible) ? URL(string: text) : nil
            if !(url?.scheme == "https" && !(url?.host ?? "").isEmpty) {
                errors.add(FieldProblem(.httpsURL, "must be an https:// URL"), to: "credentials.token_uri")
            }
        }
        return errors.isEmpty ? .success(.googleServiceAccount(object)) : .failure(errors)
    }

    /// A PEM block of ASCII text whose body is base64 of a DER SEQUENCE; the key itself is parsed where it is used.
    static func isPEMPrivateKey(_ text: String) -> Bool {
        guard text.utf8.count <= 16_384,
            text.utf8.allSatisfy({ ASCII.isPrintable($0) || $0 == 0x0A || $0 == 0x0D })
        else { return false }
        let normalized = text.replacingOccurrences(of: "\r\n", with: "\n").trimmingCharacters(
            in: .whitespacesAndNewlines)
        for label in ["PRIVATE KEY", "RSA PRIVATE KEY"] {
            let header = "-----BEGIN \(label)-----"
            let footer = "-----END \(label)-----"
            guard normalized.hasPrefix(header), normalized.hasSuffix(footer),
                normalized.utf8.count > header.utf8.count + footer.utf8.count
            else { continue }
            let body = normalized.dropFirst(header.count).dropLast(footer.count).filter { !$0.isWhitespace }
            guard let der = Data(base64Encoded: String(body)), der.count > 64, der.first == 0x30 else { return false }
            return true
        }
        return false
    }

    /// Whether `text` names an AWS region (`us-east-1`, `us-gov-west-1`, `ap-southeast-2`): two lowercase ASCII
    /// letters, one or more groups of lowercase letters, and a number, joined by hyphens.
    public static func isAWSRegion(_ text: String) -> Bool {
        let parts = text.utf8.split(separator: 0x2D, omittingEmptySubsequences: false)
        guard text.utf8.count <= 32, parts.count >= 3, let first = parts.first, let last = parts.last else {
            return false
        }
        return first.count == 2 && first.allSatisfy(ASCII.isLower)
            && parts.dropFirst().dropLast().allSatisfy { !$0.isEmpty && $0.allSatisfy(ASCII.isLower) }
            && (1...2).contains(last.count) && last.allSatisfy(ASCII.isDigit)
    }

    /// Checks the non-secret configuration of an integration of `type`.
    public static func validateConfig(type: IntegrationType, _ config: [String: JSONValue]) -> FieldErrors {
        var errors = FieldErrors()
        func string(_ key: String, _ check: (String) -> Bool, _ problem: FieldProblem) {
            guard let value = config[key] else { return }
            guard let text = value.stringValue, check(text) else {
                errors.add(problem, to: "config.\(key)")
                return
            }
        }
        guard let entry = type.entry else {
            // An integration whose provider the catalog no longer has: its settings cannot be checked, nor used.
            return errors
        }
        // The catalog's settings, then what each kind of cloud credentials takes besides.
        for setting in entry.settings {
            if setting.required, config[setting.name] == nil {
                errors.add(FieldProblem(.required, "is required"), to: "config.\(setting.name)")
            }
            if setting.format == .url {
                // A custom endpoint's base URL: only on an origin the operator allows.
                string(
                    setting.name,
                    { setting.accepts($0) && URL(string: $0).map(ProviderCatalog.current.allowsCustom) == true },
                    FieldProblem(.customEndpoint, "must be an http(s) URL on an endpoint this server allows"))
            } else {
                string(setting.name, setting.accepts, settingProblem(setting))
            }
        }
        var allowed = Set(entry.settings.map(\.name))
        switch entry.credential.kind {
        case .apiKey:
            break
        case .googleServiceAccount:
            allowed.insert("scopes")
            if let scopes = config["scopes"] {
                guard case .array(let items) = scopes, !items.isEmpty, items.count <= 20,
                    items.allSatisfy({ item in
                        guard let text = item.stringValue else { return false }
                        return text.hasPrefix("https://www.googleapis.com/auth/") && text.utf8.count <= 200
                            && text.utf8.allSatisfy(ASCII.isVisible)
                    })
                else {
                    errors.add(
                        FieldProblem(.googleScopes, "must be a list of https://www.googleapis.com/auth/… scopes"),
                        to: "config.scopes")
                    return errors
                }
            }
        case .awsKeys:
            allowed.insert("region")
            string("region", isAWSRegion, FieldProblem(.awsRegion, "must be an AWS region like us-east-1"))
        case .azureServicePrincipal:
            allowed.insert("cloud")
            string(
                "cloud", { ["public", "usgovernment", "china"].contains($0) },
                FieldProblem(.azureCloud, "must be public, usgovernment or china"))
        }
        errors.rejectUnknown(config, allowed: allowed, prefix: "config")
        return errors
    }

    /// What a malformed setting is reported as.
    private static func settingProblem(_ setting: ProviderEntry.Setting) -> FieldProblem {
        switch (FieldProblem.Code(rawValue: setting.problem), setting.format) {
        case (.openAIOrganization?, _): FieldProblem(.openAIOrganization, "must be an organization id like org-…")
        case (.openAIProject?, _): FieldProblem(.openAIProject, "must be a project id like proj_…")
        case (_, .dnsLabel):
            FieldProblem(.invalid, "must be a resource name: 2 to 63 lowercase letters, digits and -")
        case (_, .apiVersion): FieldProblem(.invalid, "must be an API version like 2024-10-21")
        case (_, .url): FieldProblem(.customEndpoint, "must be an http(s) URL on an endpoint this server allows")
        case (_, .id):
            FieldProblem(
                .invalid, "must be an id like \(setting.prefix)… (letters, digits, - and _)",
                parameters: ["example": "\(setting.prefix)…"])
        }
    }
}

/// Byte classes for validation: ASCII ranges only.
public enum ASCII {
    /// `0`–`9`.
    public static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }
    /// `a`–`z`.
    public static func isLower(_ byte: UInt8) -> Bool { (0x61...0x7A).contains(byte) }
    /// `A`–`Z` and `0`–`9`.
    public static func isUpperAlphanumeric(_ byte: UInt8) -> Bool { isDigit(byte) || (0x41...0x5A).contains(byte) }
    /// Letters and digits.
    public static func isAlphanumeric(_ byte: UInt8) -> Bool { isUpperAlphanumeric(byte) || isLower(byte) }
    /// Letters, digits, `-` and `_` (API keys, ids).
    public static func isKeyCharacter(_ byte: UInt8) -> Bool { isAlphanumeric(byte) || byte == 0x2D || byte == 0x5F }
    /// Letters, digits, `_`, `-` and `.` (JSON field names of key files).
    static func isFieldNameCharacter(_ byte: UInt8) -> Bool { isKeyCharacter(byte) || byte == 0x2E }
    /// The base64 alphabet with `+`, `/` and `=`.
    public static func isBase64(_ byte: UInt8) -> Bool {
        isAlphanumeric(byte) || byte == 0x2B || byte == 0x2F || byte == 0x3D
    }
    /// Printable ASCII, space included: no control character, nothing beyond ASCII.
    public static func isPrintable(_ byte: UInt8) -> Bool { (0x20...0x7E).contains(byte) }
    /// Printable ASCII without the space.
    public static func isVisible(_ byte: UInt8) -> Bool { (0x21...0x7E).contains(byte) }
    /// Hex digits in either case.
    public static func isHexDigit(_ byte: UInt8) -> Bool {
        isDigit(byte) || (0x41...0x46).contains(byte) || (0x61...0x66).contains(byte)
    }

    /// A GUID in its 8-4-4-4-12 hex form.
    public static func isGUID(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 36 else { return false }
        for (index, byte) in bytes.enumerated() {
            if [8, 13, 18, 23].contains(index) {
                guard byte == 0x2D else { return false }
            } else if !isHexDigit(byte) {
                return false
            }
        }
        return true
    }
}
