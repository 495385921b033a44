import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

/// Rotation policies and the persisted steps of each rotation (SPEC §15), in `integrations.rotation` and
/// `rotations`. Every step is written (and audited) before the next begins, so whichever instance claims the
/// rotation after a crash resumes it from the last step that was recorded.
public struct SQLRotationStore: RotationStore {
    let database: Database
    let secrets: SQLSecretStore
    let integrations: SQLIntegrationStore
    let audit: SQLAuditLog

    /// Creates the store.
    public init(database: Database, secrets: SQLSecretStore, integrations: SQLIntegrationStore, audit: SQLAuditLog) {
        self.database = database
        self.secrets = secrets
        self.integrations = integrations
        self.audit = audit
    }

    /// Sets one of the owner's integrations' rotation policy; audited as an update.
    ///
    /// - Throws: `validationFailed` for a policy its type cannot have, `notFound`.
    public func setPolicy(_ policy: RotationPolicy, id: UUID, ownerID: UUID, actor: AuditActor) async throws
        -> Integration
    {
        let current = try await integrations.get(id: id, ownerID: ownerID)
        let problems = policy.problems(for: current.type)
        guard problems.isEmpty else { throw problems.error }
        guard policy != current.rotation else { return current }
        let text = try SQLIntegrationStore.encode(policy)
        try await database.transaction { sql in
            try await sql.raw(
                """
                UPDATE integrations SET rotation = \(bind: text), updated_at = \(bind: Date())
                WHERE id = \(bind: id) AND owner_id = \(bind: ownerID)
                """
            ).run()
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .integrationUpdate, ownerID: ownerID, integrationID: id,
                    detail: [
                        "rotation": .string(policy.mode.rawValue), "every_days": .number(Double(policy.everyDays)),
                        "grace_hours": .number(Double(policy.graceHours)),
                    ]),
                on: sql)
        }
        return try await integrations.get(id: id, ownerID: ownerID)
    }

    /// Starts a rotation of one of the owner's integrations now.
    ///
    /// - Throws: `notFound`; `conflict` when its provider cannot rotate credentials, it is disabled, or a rotation
    ///   is already under way.
    public func request(id: UUID, ownerID: UUID, actor: AuditActor, now: Date = Date()) async throws -> RotationRecord {
        let integration = try await integrations.get(id: id, ownerID: ownerID)
        guard RotationPolicy.allowsAutomatic(integration.type) else {
            throw KeyhavenError.conflict("Only aws, google_cloud and azure credentials can rotate themselves.")
        }
        guard integration.enabled else { throw KeyhavenError.conflict("Enable the integration before rotating it.") }
        guard let record = try await start(integration, actor: actor, now: now) else {
            throw KeyhavenError.conflict(
                "A rotation of this integration is already under way, or it changed meanwhile.")
        }
        return record
    }

    /// Starts a rotation for each enabled integration whose automatic policy says it is due; returns how many.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    @discardableResult
    public func startDue(now: Date, limit: Int = 50) async throws -> Int {
        let candidates = try await database.withConnection { sql in
            try await sql.raw(
                """
                SELECT * FROM integrations i WHERE i.rotation IS NOT NULL AND i.enabled
                AND NOT EXISTS (
                    SELECT 1 FROM rotations r WHERE r.integration_id = i.id AND r.state NOT IN ('done', 'failed')
                )
                ORDER BY i.credentials_changed_at LIMIT \(bind: limit * 4)
                """
            ).all().map(SQLIntegrationStore.integration)
        }
        var started = 0
        for integration in candidates where started < limit {
            guard integration.rotation.mode == .automatic, RotationPolicy.allowsAutomatic(integration.type),
                integration.rotationDue(now: now)
            else { continue }
            // The failed rotation of this very version is not retried on its own: the user asks again.
            let failedBefore = try await database.withConnection { sql in
                try await sql.raw(
                    """
                    SELECT 1 FROM rotations WHERE integration_id = \(bind: integration.id) AND state = 'failed'
                    AND old_version = \(bind: integration.credentialVersion) LIMIT 1
                    """
                ).first() != nil
            }
            if failedBefore { continue }
            if try await start(integration, actor: .system, now: now) != nil { started += 1 }
        }
        return started
    }

    /// Writes one audit event for each integration on `remind` (or on a policy its provider cannot automate) whose
    /// credentials became due, once per credential version; returns how many.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    @discardableResult
    public func remindDue(now: Date, limit: Int = 200) async throws -> Int {
        let candidates = try await database.withConnection { sql in
            try await sql.raw(
                """
                SELECT * FROM integrations WHERE rotation IS NOT NULL
                AND (rotation_reminded_version IS NULL OR rotation_reminded_version <> current_version)
                ORDER BY credentials_changed_at LIMIT \(bind: limit)
                """
            ).all().map(SQLIntegrationStore.integration)
        }
        var reminded = 0
        for integration in candidates where integration.rotation.mode == .remind && integration.rotationDue(now: now) {
            try await database.transaction { sql in
                let marked = try await sql.raw(
                    """
                    UPDATE integrations SET rotation_reminded_version = current_version
                    WHERE id = \(bind: integration.id) AND current_version = \(bind: integration.credentialVersion)
                    AND (rotation_reminded_version IS NULL OR rotation_reminded_version <> current_version)
                    RETURNING id
                    """
                ).all().count
                guard marked == 1 else { return }
                try await audit.append(
                    AuditEntry(
                        actor: .system, action: .rotationDue, ownerID: integration.ownerID,
                        integrationID: integration.id,
                        detail: [
                            "credential_version": .number(Double(integration.credentialVersion)),
                            "every_days": .number(Double(integration.rotation.everyDays)),
                        ]),
                    on: sql)
                reminded += 1
            }
        }
        return reminded
    }

    /// Starts a rotation of `integration` as it was read, unless one is under way (nil) or the integration has
    /// changed since (moved to another workspace, its credentials replaced, disabled or deleted: nil too, and the
    /// next round looks at it afresh). The integration's row is locked first (PostgreSQL; SQLite's writes are
    /// serial), as a move locks it before it looks for rotations under way: a rotation never starts bound to the
    /// workspace an integration has just left, where no step could read its credentials.
    func start(_ integration: Integration, actor: AuditActor, now: Date) async throws -> RotationRecord? {
        let record = RotationRecord(
            id: UUID.timeOrdered(now: now), integrationID: integration.id, ownerID: integration.ownerID,
            state: .requested,
            oldVersion: integration.credentialVersion, newVersion: nil, oldKeyID: nil, newKeyID: nil, error: nil,
            attempts: 0,
            nextAt: now, createdAt: now, updatedAt: now)
        return try await database.transaction { sql -> RotationRecord? in
            let lock = database.kind == .postgres ? " FOR UPDATE" : ""
            let unchanged = try await sql.raw(
                """
                SELECT id FROM integrations WHERE id = \(bind: integration.id)
                AND owner_id = \(bind: integration.ownerID)
                AND current_version = \(bind: integration.credentialVersion) AND enabled\(unsafeRaw: lock)
                """
            ).first()
            guard unchanged != nil else { return nil }
            // The unique index on unfinished rotations decides between instances starting the same one.
            let inserted = try await sql.raw(
                """
                INSERT INTO rotations (id, integration_id, owner_id, state, old_version, attempts, next_at, created_at,
                updated_at)
                VALUES (\(bind: record.id), \(bind: record.integrationID), \(bind: record.ownerID),
                \(bind: record.state.rawValue), \(bind: record.oldVersion), 0, \(bind: now), \(bind: now), \(bind: now))
                ON CONFLICT DO NOTHING RETURNING id
                """
            ).all().count
            guard inserted == 1 else { return nil }
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .rotationStart, ownerID: record.ownerID, integrationID: record.integrationID,
                    detail: [
                        "rotation_id": .string(record.id.lowercasedText),
                        "credential_version": .number(Double(record.oldVersion)),
                    ]),
                on: sql)
            return record
        }
    }

    /// An integration's rotations, newest first.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    public func rotations(integrationID: UUID, ownerID: UUID, limit: Int = 20) async throws -> [RotationRecord] {
        try await database.withConnection { sql in
            try await sql.raw(
                """
                SELECT * FROM rotations WHERE integration_id = \(bind: integrationID) AND owner_id = \(bind: ownerID)
                ORDER BY created_at DESC LIMIT \(bind: limit)
                """
            ).all().map(Self.record)
        }
    }

    static func record(_ row: any SQLRow) throws -> RotationRecord {
        guard let state = RotationState(rawValue: try row.decode(column: "state", as: String.self)) else {
            throw KeyhavenError.internalError
        }
        return RotationRecord(
            id: try row.decode(column: "id", as: UUID.self),
            integrationID: try row.decode(column: "integration_id", as: UUID.self),
            ownerID: try row.decode(column: "owner_id", as: UUID.self),
            state: state,
            oldVersion: try row.decode(column: "old_version", as: Int.self),
            newVersion: try row.decode(column: "new_version", as: Int?.self),
            oldKeyID: try row.decode(column: "old_key_id", as: String?.self),
            newKeyID: try row.decode(column: "new_key_id", as: String?.self),
            error: try row.decode(column: "error", as: String?.self),
            attempts: try row.decode(column: "attempts", as: Int.self),
            nextAt: try row.decode(column: "next_at", as: Date.self),
            createdAt: try row.decode(column: "created_at", as: Date.self),
            updatedAt: try row.decode(column: "updated_at", as: Date.self))
    }
}
