import Foundation

/// How an integration's credentials are renewed (SPEC §15).
public struct RotationPolicy: Sendable, Equatable, Codable {
    /// What Keyhaven does when the credentials are `everyDays` old.
    public enum Mode: String, Sendable, Codable, CaseIterable {
        /// Nothing.
        case off
        /// Shows that a rotation is due, and audits it once.
        case remind
        /// Replaces the credential through the provider's API (AWS, Google Cloud, Azure).
        case automatic
    }

    public var mode: Mode
    /// The credentials' age at which a rotation is due.
    public var everyDays: Int
    /// How long the old credential keeps working after the new one is current (and, on AWS, how long it then
    /// stays deactivated before it is deleted).
    public var graceHours: Int

    /// No rotation.
    public static let off = RotationPolicy(mode: .off)

    /// Creates a policy; every 90 days with 24 hours of grace unless told otherwise.
    public init(mode: Mode, everyDays: Int = 90, graceHours: Int = 24) {
        self.mode = mode
        self.everyDays = everyDays
        self.graceHours = graceHours
    }

    enum CodingKeys: String, CodingKey {
        case mode
        case everyDays = "every_days"
        case graceHours = "grace_hours"
    }

    /// Whether `type`'s provider lets a credential replace itself: the cloud kinds, not API keys.
    public static func allowsAutomatic(_ type: IntegrationType) -> Bool {
        guard let kind = type.entry?.credential.kind else { return false }
        return kind != .apiKey
    }

    /// The problems with this policy for an integration of `type`, by field (`rotation.mode`, …).
    public func problems(for type: IntegrationType) -> FieldErrors {
        var errors = FieldErrors()
        if mode == .automatic && !Self.allowsAutomatic(type) {
            errors.add(.rotationAutomatic, to: "rotation.mode")
        }
        if !(1...3650).contains(everyDays) { errors.add(.rotationEveryDays, to: "rotation.every_days") }
        if !(0...720).contains(graceHours) { errors.add(.rotationGraceHours, to: "rotation.grace_hours") }
        return errors
    }

    /// When credentials stored at `changedAt` are due for rotation; nil when the mode is off.
    public func dueDate(after changedAt: Date) -> Date? {
        mode == .off ? nil : changedAt.addingTimeInterval(Double(everyDays) * 86400)
    }

    /// The grace period.
    public var grace: TimeInterval { Double(graceHours) * 3600 }
}

/// The steps of one rotation, persisted so a crash at any point resumes where it stopped (SPEC §15).
public enum RotationState: String, Sendable, CaseIterable {
    /// Asked for; nothing done at the provider yet.
    case requested
    /// The provider is being asked for a new credential (if the process stops here, whatever it made is found
    /// and removed before trying again).
    case creating
    /// The new credential is sealed and stored as a version that is not current yet.
    case stored
    /// The new version is current; the old credential still works until the grace period ends.
    case current
    /// The old credential is deactivated (AWS), to be deleted after a second grace period.
    case deactivated
    /// The old credential is deleted: finished.
    case done
    /// Given up; the old credential is still current, and anything new was removed at the provider.
    case failed

    /// Whether nothing more will happen.
    public var isFinished: Bool { self == .done || self == .failed }
}

/// One rotation of one integration's credentials.
public struct RotationRecord: Sendable, Equatable {
    public var id: UUID
    public var integrationID: UUID
    public var ownerID: UUID
    public var state: RotationState
    /// The version that was current when the rotation began.
    public var oldVersion: Int
    /// The version holding the new credential, once stored.
    public var newVersion: Int?
    /// The provider's id of the old credential.
    public var oldKeyID: String?
    /// The provider's id of the new credential.
    public var newKeyID: String?
    /// Why it failed (never a secret).
    public var error: String?
    /// Steps tried without success in a row.
    public var attempts: Int
    /// The earliest time the next step may run (the end of a grace period).
    public var nextAt: Date
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: UUID, integrationID: UUID, ownerID: UUID, state: RotationState, oldVersion: Int, newVersion: Int?,
        oldKeyID: String?, newKeyID: String?, error: String?, attempts: Int, nextAt: Date, createdAt: Date,
        updatedAt: Date
    ) {
        self.id = id
        self.integrationID = integrationID
        self.ownerID = ownerID
        self.state = state
        self.oldVersion = oldVersion
        self.newVersion = newVersion
        self.oldKeyID = oldKeyID
        self.newKeyID = newKeyID
        self.error = error
        self.attempts = attempts
        self.nextAt = nextAt
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// Rotation policies and rotations, as the API and the pages use them.
public protocol RotationStore: Sendable {
    /// Sets one of the owner's integrations' policy.
    ///
    /// - Throws: `validationFailed` for a policy its type cannot have, `notFound`.
    func setPolicy(_ policy: RotationPolicy, id: UUID, ownerID: UUID, actor: AuditActor) async throws -> Integration

    /// Starts a rotation now.
    ///
    /// - Throws: `notFound`; `conflict` when the provider cannot rotate, the integration is disabled, or one is
    ///   already under way.
    func request(id: UUID, ownerID: UUID, actor: AuditActor, now: Date) async throws -> RotationRecord

    /// An integration's rotations, newest first.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    func rotations(integrationID: UUID, ownerID: UUID, limit: Int) async throws -> [RotationRecord]
}

/// A provider credential Keyhaven made or was to delete and no longer can: listed for the operator, who deletes it
/// at the provider (`keyhaven rotations unretired`).
public struct UnretiredKey: Sendable, Equatable {
    public var id: UUID
    /// The workspace the integration belonged to.
    public var workspaceID: UUID
    public var integrationID: UUID
    public var integrationName: String
    public var integrationType: String
    public var rotationID: UUID
    /// The provider's id of the credential (an access key id, a key id; never a secret); nil when a rotation was
    /// making one and its id was not known yet.
    public var keyID: String?
    /// Why it is listed, and what to look for.
    public var reason: String
    public var createdAt: Date

    public init(
        id: UUID, workspaceID: UUID, integrationID: UUID, integrationName: String, integrationType: String,
        rotationID: UUID, keyID: String?, reason: String, createdAt: Date
    ) {
        self.id = id
        self.workspaceID = workspaceID
        self.integrationID = integrationID
        self.integrationName = integrationName
        self.integrationType = integrationType
        self.rotationID = rotationID
        self.keyID = keyID
        self.reason = reason
        self.createdAt = createdAt
    }
}
