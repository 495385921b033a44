import Foundation

/// Who did something (SPEC §8).
public struct AuditActor: Sendable, Equatable {
    /// The kinds of actor.
    public enum Kind: String, Sendable {
        case user
        case service
        case system
        case `operator`
    }

    /// What kind of actor.
    public var kind: Kind
    /// The user id, service token id, or nothing for the system and the operator.
    public var id: String?
    /// The client address, when the action came over HTTP.
    public var ip: String?
    /// The client's User-Agent, when the action came over HTTP.
    public var userAgent: String?

    /// Creates an actor.
    public init(kind: Kind, id: String?, ip: String? = nil, userAgent: String? = nil) {
        self.kind = kind
        self.id = id
        self.ip = ip
        self.userAgent = userAgent.map { String($0.prefix(256)) }
    }

    /// Keyhaven itself (background work).
    public static let system = AuditActor(kind: .system, id: nil)
    /// The operator at the command line.
    public static let `operator` = AuditActor(kind: .operator, id: nil)
}

/// Every action the audit trail records (SPEC §8).
public enum AuditAction: String, Sendable, CaseIterable {
    case signup = "auth.signup"
    case login = "auth.login"
    case logout = "auth.logout"
    case tokenCreate = "token.create"
    case tokenRevoke = "token.revoke"
    case integrationCreate = "integration.create"
    case integrationUpdate = "integration.update"
    case credentialsRotate = "integration.credentials.rotate"
    case integrationEnable = "integration.enable"
    case integrationDisable = "integration.disable"
    case integrationDelete = "integration.delete"
    case integrationTest = "integration.test"
    case integrationVerify = "integration.verify"
    case credentialsRead = "credentials.read"
    case keyRotate = "key.rotate"
    case keyRetire = "key.retire"
    case rotationStart = "integration.rotation.start"
    case rotationStep = "integration.rotation.step"
    case rotationFail = "integration.rotation.fail"
    case rotationDue = "integration.rotation.due"
    case backupCreate = "backup.create"
    case backupRestore = "backup.restore"
    case integrationMove = "integration.move"
    case organizationCreate = "organization.create"
    case organizationUpdate = "organization.update"
    case organizationDelete = "organization.delete"
    case memberUpdate = "organization.member.update"
    case memberRemove = "organization.member.remove"
    case memberConfirm = "organization.member.confirm"
    case invitationCreate = "organization.invitation.create"
    case invitationRevoke = "organization.invitation.revoke"
    case invitationAccept = "organization.invitation.accept"
    case limitsUpdate = "usage.limits.update"
    case budgetWarning = "usage.budget.warning"
    case usageReport = "usage.report"
    case routeUpdate = "gateway.route.update"
    case routeDelete = "gateway.route.delete"
    case templateCreate = "template.create"
    case templateUpdate = "template.update"
    case templateDelete = "template.delete"
    case pricesImport = "prices.import"
    case pricesUpdate = "prices.update"
}

/// How an audited action ended.
public enum AuditOutcome: String, Sendable {
    case success
    case failure
    case denied
}

/// One event to append. `detail` must never hold a secret.
public struct AuditEntry: Sendable {
    public var actor: AuditActor
    public var action: AuditAction
    public var outcome: AuditOutcome
    public var ownerID: UUID?
    public var integrationID: UUID?
    public var detail: [String: JSONValue]

    /// Creates an entry.
    public init(
        actor: AuditActor, action: AuditAction, outcome: AuditOutcome = .success, ownerID: UUID? = nil,
        integrationID: UUID? = nil, detail: [String: JSONValue] = [:]
    ) {
        self.actor = actor
        self.action = action
        self.outcome = outcome
        self.ownerID = ownerID
        self.integrationID = integrationID
        self.detail = detail
    }
}

/// A stored audit event, chained to the one before it.
public struct AuditEvent: Sendable, Equatable {
    public var seq: Int64
    public var id: UUID
    /// The exact ISO-8601 time text that was hashed.
    public var at: String
    public var actorType: String
    public var actorID: String?
    public var ownerID: UUID?
    public var action: String
    public var integrationID: UUID?
    public var outcome: String
    public var ip: String?
    public var userAgent: String?
    /// The detail object as canonical JSON text.
    public var detail: String
    public var prevHash: String
    public var hash: String
    /// The audit key that chains this event; nil for events from before the chain was keyed (plain SHA-256).
    public var keyID: String?

    /// Creates an event value.
    public init(
        seq: Int64, id: UUID, at: String, actorType: String, actorID: String?, ownerID: UUID?, action: String,
        integrationID: UUID?, outcome: String, ip: String?, userAgent: String?, detail: String, prevHash: String,
        hash: String, keyID: String? = nil
    ) {
        self.seq = seq
        self.id = id
        self.at = at
        self.actorType = actorType
        self.actorID = actorID
        self.ownerID = ownerID
        self.action = action
        self.integrationID = integrationID
        self.outcome = outcome
        self.ip = ip
        self.userAgent = userAgent
        self.detail = detail
        self.prevHash = prevHash
        self.hash = hash
        self.keyID = keyID
    }
}

/// The result of checking the whole chain.
public enum AuditVerification: Sendable, Equatable {
    /// Every event's hash and link holds.
    case intact(events: Int)
    /// The first event at which the chain breaks, and why.
    case broken(seq: Int64, reason: String)
}

/// The append-only, keyed hash-chained audit trail (SPEC §8).
public protocol AuditLog: Sendable {
    /// Appends one event in its own transaction.
    ///
    /// - Throws: `KeyhavenError.unavailable` if it could not be written; callers that must not proceed without
    ///   an audit record (credential reads) fail with it.
    func append(_ entry: AuditEntry) async throws

    /// A workspace's events (`ownerID` is the workspace), newest first, optionally for one integration or only
    /// those about integrations, before the sequence number `before`.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func events(
        ownerID: UUID, integrationID: UUID?, integrationsOnly: Bool, limit: Int, before: Int64?
    ) async throws -> [AuditEvent]

    /// Recomputes the whole chain.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func verify() async throws -> AuditVerification
}

extension AuditLog {
    /// A workspace's events, all kinds.
    ///
    /// - Throws: as ``events(ownerID:integrationID:integrationsOnly:limit:before:)``.
    public func events(ownerID: UUID, integrationID: UUID?, limit: Int, before: Int64?) async throws -> [AuditEvent] {
        try await events(
            ownerID: ownerID, integrationID: integrationID, integrationsOnly: false, limit: limit, before: before)
    }
}
