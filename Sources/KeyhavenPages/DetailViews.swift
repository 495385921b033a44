import Foundation
import KeyhavenCore
import KeyhavenWeb

/// What an action on an integration adds to its detail page when it answers with the page: a notice, a test's
/// result, or the problems of a refused form.
struct DetailAddition: Sendable {
    var flash: Notice? = nil
    var result: TestResult? = nil
    /// The refused credentials form's problems, by field.
    var replaceErrors: [String: FieldProblem] = [:]
    /// What the refused credentials form shows again (never a secret).
    var kept: [String: String] = [:]
    var renameError: String? = nil
    /// The refused rotation form's problems, by field.
    var rotationErrors: [String: FieldProblem] = [:]
    var rotationRefused: String? = nil
}

/// An integration's detail page.
struct IntegrationDetailPage: Sendable {
    let integration: IntegrationCard
    let canEdit: Bool
    let listPath: String
    /// The credentials form of its provider.
    let fields: ProviderFields
    let values: FormValues
    let errors: FieldMessages
    let replaceFailed: Bool
    let renameError: String?
    let rotation: RotationView
    let rotationErrors: FieldMessages
    let rotationRefused: String?
    /// The usage panel, for providers the gateway forwards to.
    let usage: IntegrationUsage?
    let versions: [VersionRow]
    let events: [EventRow]
    let flash: Notice?
    let result: TestResult?
}

/// The result of "Probar Conexión": the outcome in words, how long it took, and what the provider told.
struct TestResult: Sendable {
    let status: String
    let statusLabel: String
    let problem: ProblemView
    let latencyMs: Int64
    let facts: [Fact]

    init(_ record: VerificationRecord, texts: Texts) {
        status = record.outcome.status.rawValue
        statusLabel = texts.status(record.outcome.status)
        problem =
            record.problem.map { ProblemView($0, texts: texts) } ?? ProblemView(sentence: texts.outcome(record.outcome))
        latencyMs = record.latency.wholeMilliseconds
        facts = record.details.keys.sorted().map { key in
            Fact(
                label: IntegrationPages.detailLabel(key, texts: texts),
                value: IntegrationPages.text(record.details[key]))
        }
    }
}

/// One fact a check found (an AWS account, a model count).
struct Fact: Sendable {
    let label: String
    let value: String
}

/// The rotation section of the detail page: the policy form, the button, and the recent rotations.
struct RotationView: Sendable {
    let modes: [Choice]
    let everyDays: Int
    let graceHours: Int
    let canRotate: Bool
    /// Whether a rotation is under way.
    let running: Bool
    let hasHistory: Bool
    let history: [RotationRow]

    init(_ integration: Integration, rotations: [RotationRecord], texts: Texts) {
        let automatic = RotationPolicy.allowsAutomatic(integration.type)
        let modes: [RotationPolicy.Mode] = automatic ? [.off, .remind, .automatic] : [.off, .remind]
        self.modes = modes.map { mode in
            Choice(
                value: mode.rawValue, label: texts["mode_\(mode.rawValue)"],
                selected: mode == integration.rotation.mode)
        }
        everyDays = integration.rotation.everyDays
        graceHours = integration.rotation.graceHours
        running = rotations.first.map { !$0.state.isFinished } ?? false
        canRotate = automatic && integration.enabled && !running
        hasHistory = !rotations.isEmpty
        history = rotations.map { RotationRow($0, texts: texts) }
    }
}

/// One recent rotation.
struct RotationRow: Sendable {
    let started: TimeView
    let state: String
    let stateLabel: String
    /// Why it failed or is retrying, in the words of the provider or the rotation (not translated).
    let error: OriginalText?

    init(_ record: RotationRecord, texts: Texts) {
        started = TimeView(record.createdAt, texts: texts)
        state = record.state.rawValue
        stateLabel = texts["rotation_\(record.state.rawValue)"]
        error = OriginalText(record.error, texts: texts)
    }
}

/// One version of the credentials: numbers and dates only.
struct VersionRow: Sendable {
    let version: Int
    let created: TimeView
    let current: Bool

    init(_ version: SecretVersionInfo, current: Int, texts: Texts) {
        self.version = version.version
        created = TimeView(version.createdAt, texts: texts)
        self.current = version.version == current
    }
}

/// The usage panel of an integration's detail page, with its limits form for those who may set limits.
struct IntegrationUsage: Sendable {
    let panel: UsagePanel
    let canSetLimits: Bool
    let integrationID: String
}

/// The page that confirms deleting an integration.
struct DeletePage: Sendable {
    let integration: IntegrationCard
    let confirmError: String?
}
