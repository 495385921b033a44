import Foundation
import KeyhavenCore
import KeyhavenServices

// The wire types of /api/integrations and the credentials route (SPEC §6). Requests validate into values with no
// optionals left; responses are built from the domain values and never carry a credential, except the one
// credentials response, which has no other way out.

/// `POST /api/integrations`: `{name, type, credentials, config?}`.
struct CreateIntegrationRequest: RequestBody {
    static let knownFields: Set<String>? = ["name", "type", "credentials", "config", "rotation", "workspace_id"]

    var name: Input<String>?
    var type: Input<String>?
    var credentials: Input<JSONValue>?
    var config: Input<[String: JSONValue]>?
    var rotation: Input<[String: JSONValue]>?
    var workspaceID: Input<String>?

    enum CodingKeys: String, CodingKey {
        case name, type, credentials, config, rotation
        case workspaceID = "workspace_id"
    }

    /// The validated integration, or every problem by field (`errors` holds those found while reading).
    func validated(_ errors: FieldErrors) -> Result<IntegrationDraft, FieldErrors> {
        var errors = errors
        let name = TextRule.text(name, "name", required: true, maximumLength: 100, errors: &errors)
        let typeText = TextRule.text(type, "type", required: true, maximumLength: 40, errors: &errors)
        let type = typeText.flatMap(IntegrationType.init(rawValue:))
        if typeText != nil && type == nil {
            errors["type"] = "must be one of \(IntegrationType.allCases.map(\.rawValue).joined(separator: ", "))"
        }
        var config: [String: JSONValue] = [:]
        if let input = self.config {
            if let object = input.value { config = object } else { errors["config"] = "must be an object" }
        }
        var valid: Credentials?
        if let type {
            if let value = credentials?.value {
                switch CredentialValidator.validate(type: type, value) {
                case .success(let credentials): valid = credentials
                case .failure(let problems): errors.merge(problems)
                }
            } else {
                errors["credentials"] = "is required"
            }
            errors.merge(CredentialValidator.validateConfig(type: type, config))
        }
        let policy = type.flatMap { RotationRule.policy(rotation, for: $0, errors: &errors) }
        let workspace = WorkspaceParameter.field(workspaceID, errors: &errors)
        guard errors.isEmpty, let name, let type, let valid else { return .failure(errors) }
        return .success(
            IntegrationDraft(
                workspace: workspace, name: name, type: type, credentials: valid, config: config,
                rotation: policy ?? .off))
    }
}

/// `PUT` or `PATCH /api/integrations/{id}`: any of `{name, credentials, config, enabled}`; `type` only if it is the
/// current one.
struct UpdateIntegrationRequest: RequestBody {
    static let knownFields: Set<String>? = ["name", "credentials", "config", "enabled", "type", "rotation"]

    var name: Input<String>?
    var credentials: Input<JSONValue>?
    var config: Input<[String: JSONValue]>?
    var enabled: Input<Bool>?
    var rotation: Input<[String: JSONValue]>?

    /// The validated changes, or every problem by field. `sent` is the body's members as sent: a body of `type`
    /// alone changes nothing. (A `type` other than the current one was refused before: see ``typeConflict``.)
    func validated(
        for current: Integration, sent: [String: JSONValue], _ errors: FieldErrors
    ) -> Result<IntegrationChanges, FieldErrors> {
        var errors = errors
        var changes = IntegrationChanges()
        changes.name = TextRule.text(name, "name", required: false, maximumLength: 100, errors: &errors)
        if let enabled {
            if let flag = enabled.value { changes.enabled = flag } else { errors["enabled"] = "must be true or false" }
        }
        if let config {
            if let object = config.value {
                changes.config = object
                errors.merge(CredentialValidator.validateConfig(type: current.type, object))
            } else {
                errors["config"] = "must be an object"
            }
        }
        if let value = credentials?.value {
            switch CredentialValidator.validate(type: current.type, value) {
            case .success(let valid): changes.credentials = valid
            case .failure(let problems): errors.merge(problems)
            }
        }
        changes.rotation = RotationRule.policy(rotation, for: current.type, errors: &errors)
        if sent.keys.allSatisfy({ $0 == "type" }) {
            errors["body"] = "must change at least one of name, credentials, config, enabled, rotation"
        }
        return errors.isEmpty ? .success(changes) : .failure(errors)
    }
}

extension UpdateIntegrationRequest {
    /// Changes that are well formed but conflict with what the integration is (409): a `type` member, even
    /// `null`, that is not its current type; or credentials and config that do not fit its type but do fit another
    /// one.
    static func typeConflict(for current: Integration, sent: [String: JSONValue]) -> KeyhavenError? {
        if let type = sent["type"], type != .string(current.type.rawValue) {
            return .conflict("The type of an integration cannot change; create a new integration instead.")
        }
        let credentials = sent["credentials"].flatMap { $0 == .null ? nil : $0 }
        var config: [String: JSONValue]?
        if case .object(let object)? = sent["config"] { config = object }
        guard credentials != nil || config != nil else { return nil }
        func fits(_ type: IntegrationType) -> Bool {
            if let credentials, case .failure = CredentialValidator.validate(type: type, credentials) { return false }
            if let config, !CredentialValidator.validateConfig(type: type, config).isEmpty { return false }
            return true
        }
        guard !fits(current.type), IntegrationType.allCases.contains(where: fits) else { return nil }
        return .conflict("These credentials or settings are for another type of integration; create one of that type.")
    }
}

/// `POST /api/integrations/{id}/move`: `{workspace_id}`.
struct MoveIntegrationRequest: RequestBody {
    static let knownFields: Set<String>? = ["workspace_id"]

    var workspaceID: Input<String>?

    enum CodingKeys: String, CodingKey {
        case workspaceID = "workspace_id"
    }

    /// The target workspace, or the problem.
    func validated(_ errors: FieldErrors) -> Result<UUID, FieldErrors> {
        var errors = errors
        let workspace = WorkspaceParameter.field(workspaceID, errors: &errors)
        if workspaceID == nil { errors["workspace_id"] = "is required" }
        guard errors.isEmpty, let workspace else { return .failure(errors) }
        return .success(workspace)
    }
}

/// The integration object of SPEC §6; every field is present, null when unset. Never any credential.
struct IntegrationResponse: ResponseBody {
    let integration: Integration

    /// The fields in the order `jsonText` writes them (sorted by key), so a page of integrations is written without
    /// a dictionary to build, hash and sort for every row.
    var fields: [(String, JSONValue)] {
        [
            ("config", .object(integration.config)),
            ("created_at", wireDate(integration.createdAt)),
            ("credential_hint", integration.credentialHint.map(JSONValue.string) ?? .null),
            ("credential_version", .number(Double(integration.credentialVersion))),
            ("enabled", .bool(integration.enabled)),
            ("error_message", integration.errorMessage.map(JSONValue.string) ?? .null),
            ("id", wireID(integration.id)),
            ("last_used_at", wireDate(integration.lastUsedAt)),
            ("last_verified_at", wireDate(integration.lastVerifiedAt)),
            ("name", .string(integration.name)),
            ("retire_error", integration.retireError.map(JSONValue.string) ?? .null),
            ("rotation", RotationRule.json(integration.rotation)),
            ("rotation_due", .bool(integration.rotationDue())),
            ("status", .string(integration.status.rawValue)),
            ("type", .string(integration.type.rawValue)),
            ("updated_at", wireDate(integration.updatedAt)),
            ("workspace_id", wireID(integration.ownerID)),
        ]
    }

    var json: JSONValue { .object(Dictionary(uniqueKeysWithValues: fields)) }

    func write(to output: inout [UInt8]) {
        var object = JSONObjectWriter(&output)
        for (key, value) in fields { object.field(key, value, to: &output) }
        object.end(&output)
    }
}

/// The `rotation` member: `{mode, every_days?, grace_hours?}` (SPEC §15).
enum RotationRule {
    static let fields: Set<String> = ["mode", "every_days", "grace_hours"]

    /// The policy sent for an integration of `type`, nil when absent; problems go to `errors` under `rotation.…`.
    static func policy(_ input: Input<[String: JSONValue]>?, for type: IntegrationType, errors: inout FieldErrors)
        -> RotationPolicy?
    {
        guard let input else { return nil }
        guard let object = input.value else {
            errors["rotation"] = "must be an object with mode, every_days and grace_hours"
            return nil
        }
        for key in object.keys where !fields.contains(key) { errors["rotation.\(key)"] = "is not a known field" }
        let mode = object["mode"]?.stringValue.flatMap(RotationPolicy.Mode.init(rawValue:))
        if mode == nil { errors["rotation.mode"] = "must be off, remind or automatic" }
        func whole(_ name: String, _ fallback: Int) -> Int? {
            guard let value = object[name] else { return fallback }
            guard case .number(let number) = value, number == number.rounded(), abs(number) < 1e9 else {
                errors["rotation.\(name)"] = "must be a whole number"
                return nil
            }
            return Int(number)
        }
        let everyDays = whole("every_days", 90)
        let graceHours = whole("grace_hours", 24)
        guard let mode, let everyDays, let graceHours else { return nil }
        let policy = RotationPolicy(mode: mode, everyDays: everyDays, graceHours: graceHours)
        errors.merge(policy.problems(for: type))
        return policy
    }

    static func json(_ policy: RotationPolicy) -> JSONValue {
        .object([
            "mode": .string(policy.mode.rawValue), "every_days": .number(Double(policy.everyDays)),
            "grace_hours": .number(Double(policy.graceHours)),
        ])
    }
}

/// `POST /api/integrations/{id}/rotate`: the rotation that was started.
struct RotationResponse: ResponseBody {
    let rotation: RotationRecord

    var json: JSONValue {
        .object([
            "id": wireID(rotation.id),
            "integration_id": wireID(rotation.integrationID),
            "state": .string(rotation.state.rawValue),
            "created_at": wireDate(rotation.createdAt),
        ])
    }
}

/// `GET /api/integrations`: a page and the cursor of the next one.
struct IntegrationListResponse: ResponseBody {
    let integrations: [Integration]
    let nextCursor: String?

    var json: JSONValue {
        .object([
            "integrations": .array(integrations.map { IntegrationResponse(integration: $0).json }),
            "next_cursor": nextCursor.map(JSONValue.string) ?? .null,
        ])
    }

    /// The same bytes as ``json``, each integration written directly.
    func write(to output: inout [UInt8]) {
        output.append(contentsOf: #"{"integrations":["#.utf8)
        for (index, integration) in integrations.enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            IntegrationResponse(integration: integration).write(to: &output)
        }
        output.append(contentsOf: #"],"next_cursor":"#.utf8)
        (nextCursor.map(JSONValue.string) ?? .null).write(to: &output)
        output.append(UInt8(ascii: "}"))
    }
}

/// `GET /api/integrations/{id}/credentials`: the decrypted credentials and the non-secret settings that go with
/// them. The only response that carries a credential.
struct CredentialsResponse: ResponseBody {
    let integration: Integration
    let credentials: Credentials

    var json: JSONValue {
        .object([
            "integration_id": wireID(integration.id),
            "type": .string(integration.type.rawValue),
            "status": .string(integration.status.rawValue),
            "credential_version": .number(Double(integration.credentialVersion)),
            "credentials": credentials.wireValue,
            // A backend needs the region or the organization to use the credentials.
            "config": .object(integration.config),
        ])
    }
}

/// `POST /api/integrations/{id}/test`: what the check found.
struct TestResultResponse: ResponseBody {
    let record: VerificationRecord
    let language: String

    var json: JSONValue {
        let milliseconds = record.latency.wholeMilliseconds
        return .object([
            "status": .string(record.outcome.status.rawValue),
            "outcome": .string(record.outcome.rawValue),
            "message": .string(record.outcome.message(language: language)),
            "error_message": record.errorMessage.map(JSONValue.string) ?? .null,
            "checked_at": wireDate(record.checkedAt),
            "latency_ms": .number(Double(milliseconds)),
            "details": .object(record.details),
        ])
    }
}
