import Foundation

/// One validation problem with a field: a stable code, the values it names, and the English sentence the JSON API
/// returns for it.
///
/// Interfaces in other languages translate the ``code`` (filling in ``parameters``); the English ``text`` is the
/// API's, and stays as it is.
public struct FieldProblem: Sendable, Equatable {
    /// The kinds of problem, each with a stable name.
    public enum Code: String, Sendable, CaseIterable {
        case required
        case invalid
        case unknownField = "unknown_field"
        case email
        case controlCharacters = "control_characters"
        case tooShort = "too_short"
        case tooLong = "too_long"
        case tooCommon = "too_common"
        case name
        case nameTaken = "name_taken"
        case apiKey = "api_key"
        case geminiKey = "gemini_key"
        case awsObject = "aws_object"
        case awsAccessKeyID = "aws_access_key_id"
        case awsSecretAccessKey = "aws_secret_access_key"
        case awsSessionTokenRequired = "aws_session_token_required"
        case awsSessionToken = "aws_session_token"
        case awsRegion = "aws_region"
        case azureObject = "azure_object"
        case azureTenantID = "azure_tenant_id"
        case azureClientID = "azure_client_id"
        case azureClientSecret = "azure_client_secret"
        case azureCloud = "azure_cloud"
        case serviceAccountFile = "service_account_file"
        case serviceAccountFields = "service_account_fields"
        case serviceAccountFieldName = "service_account_field_name"
        case serviceAccountType = "service_account_type"
        case serviceAccountEmail = "service_account_email"
        case singleLineText = "single_line_text"
        case pemPrivateKey = "pem_private_key"
        case privateKeyID = "private_key_id"
        case httpsURL = "https_url"
        case customEndpoint = "custom_endpoint"
        case googleScopes = "google_scopes"
        case openAIOrganization = "openai_organization"
        case openAIProject = "openai_project"
        case fileOrPaste = "file_or_paste"
        case chooseOne = "choose_one"
        case expiryDays = "expiry_days"
        case rotationMode = "rotation_mode"
        case rotationAutomatic = "rotation_automatic"
        case rotationEveryDays = "rotation_every_days"
        case rotationGraceHours = "rotation_grace_hours"
    }

    /// What kind of problem it is.
    public let code: Code
    /// The values the sentence names (a length, an example), by name.
    public let parameters: [String: String]
    /// The sentence in English, as the API returns it in `fields`.
    public let text: String

    /// A problem of kind `code` whose English sentence is `text`.
    public init(_ code: Code, _ text: String, parameters: [String: String] = [:]) {
        self.code = code
        self.text = text
        self.parameters = parameters
    }

    /// A problem known only by its English sentence (one set as text, by a caller that gave no code).
    public static func described(_ text: String) -> FieldProblem { FieldProblem(.invalid, text) }

    /// Nothing was given.
    public static let required = FieldProblem(.required, "is required")
    /// A field the object does not have.
    public static let unknownField = FieldProblem(.unknownField, "is not a known field")
    /// Not an email address.
    public static let email = FieldProblem(.email, "must be an email address")
    /// A control character (a password).
    public static let controlCharacters = FieldProblem(.controlCharacters, "must not contain control characters")
    /// One of the most common passwords.
    public static let tooCommon = FieldProblem(.tooCommon, "is too common; choose another")
    /// Not a name: blank, over 100 characters, or with invisible or controlling characters.
    public static let name = FieldProblem(.name, "must be a non-empty string of at most 100 visible characters")
    /// The name of another integration of the workspace.
    public static let nameTaken = FieldProblem(.nameTaken, "is already the name of another of your integrations")
    /// Both a key file and pasted JSON.
    public static let fileOrPaste = FieldProblem(.fileOrPaste, "choose a file or paste the JSON, not both")
    /// No option chosen where one is needed.
    public static let chooseOne = FieldProblem(.chooseOne, "choose at least one")
    /// Not a whole number of days from 1 to 365.
    public static let expiryDays = FieldProblem(.expiryDays, "must be a whole number of days from 1 to 365")
    /// Not a service account's key file.
    public static let serviceAccountFile = FieldProblem(
        .serviceAccountFile, "must be the service account's JSON key file")
    /// Automatic rotation for a provider that cannot rotate its own credentials.
    public static let rotationAutomatic = FieldProblem(
        .rotationAutomatic, "automatic rotation is only possible for aws, google_cloud and azure; use remind")
    /// A rotation period out of range.
    public static let rotationEveryDays = FieldProblem(
        .rotationEveryDays, "must be a whole number of days from 1 to 3650")
    /// A grace period out of range.
    public static let rotationGraceHours = FieldProblem(
        .rotationGraceHours, "must be a whole number of hours from 0 to 720")
    /// Not a rotation mode.
    public static let rotationMode = FieldProblem(.rotationMode, "must be off, remind or automatic")

    /// At least `minimum` characters.
    public static func tooShort(minimum: Int) -> FieldProblem {
        FieldProblem(.tooShort, "must be at least \(minimum) characters", parameters: ["minimum": String(minimum)])
    }

    /// At most `maximum` characters.
    public static func tooLong(maximum: Int) -> FieldProblem {
        FieldProblem(.tooLong, "must be at most \(maximum) characters", parameters: ["maximum": String(maximum)])
    }

    /// An API key shaped like `example`.
    public static func apiKey(example: String) -> FieldProblem {
        FieldProblem(
            .apiKey, "must be an API key like \(example) (letters, digits, - and _ only)",
            parameters: ["example": example])
    }
}

/// Validation problems by field name, as the 422 error body's `fields` shows them.
///
/// Each problem keeps its code: ``problem(_:)`` gives it to interfaces that translate; ``problems`` is the English
/// text the API returns. A problem set as text alone (``subscript(_:)``) is kept as ``FieldProblem/described(_:)``.
public struct FieldErrors: Error, Sendable, Equatable {
    private var byField: [String: FieldProblem] = [:]

    /// Creates an empty set.
    public init() {}

    /// The English problem by field. Setting it keeps the code of every problem whose text is unchanged.
    public var problems: [String: String] {
        get { byField.mapValues(\.text) }
        set {
            var kept: [String: FieldProblem] = [:]
            for (field, text) in newValue {
                kept[field] = byField[field].flatMap { $0.text == text ? $0 : nil } ?? .described(text)
            }
            byField = kept
        }
    }

    /// The problem with one field, in English.
    public subscript(field: String) -> String? {
        get { byField[field]?.text }
        set { byField[field] = newValue.map(FieldProblem.described) }
    }

    /// The problem with one field, with its code.
    public func problem(_ field: String) -> FieldProblem? { byField[field] }

    /// Every problem with its code, by field.
    public var all: [String: FieldProblem] { byField }

    /// Records `problem` against `field`, replacing any other.
    public mutating func add(_ problem: FieldProblem, to field: String) { byField[field] = problem }

    /// Whether there is no problem.
    public var isEmpty: Bool { byField.isEmpty }

    /// The fields with problems, sorted and comma-separated (for messages that must not quote values).
    public var fieldList: String { byField.keys.sorted().joined(separator: ", ") }

    mutating func rejectUnknown(_ fields: [String: JSONValue], allowed: Set<String>, prefix: String) {
        for key in fields.keys where !allowed.contains(key) {
            byField["\(prefix).\(key)"] = .unknownField
        }
    }

    /// `refused` (English problems by field, as a `validationFailed` error carries them) with the codes of the
    /// same problems found again by `rules`; a problem `rules` does not find keeps its sentence alone.
    public static func coding(_ refused: [String: String], with rules: FieldErrors) -> [String: FieldProblem] {
        refused.reduce(into: [:]) { coded, entry in
            let found = rules.problem(entry.key).flatMap { $0.text == entry.value ? $0 : nil }
            coded[entry.key] = found ?? .described(entry.value)
        }
    }

    /// The domain error for these problems.
    public var error: KeyhavenError { .validationFailed(problems) }
}
