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
    public func setPolicy(_ policy: RotationPolicy, id: UUID, ownerID: UUID, actor: AuditActor) async throws -> Integration {
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
                    detail: ["rotation": .string(policy.mode.rawValue), "every_days": .number(Double(policy.everyDays)),
                             "grace_hours": .number(Double(policy.graceHours))]),
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
        guard RotationPolicy.automaticTypes.contains(integration.type) else {
            throw KeyhavenError.conflict("Only aws, google_cloud and azure credentials can rotate themselves.")
        }
        guard integration.enabled else { throw KeyhavenError.conflict("Enable the integration before rotating it.") }
        guard let record = try await start(integration, actor: actor, now: now) else {
            throw KeyhavenError.conflict("A rotation of this integration is already under way, or it changed meanwhile.")
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
                AND NOT EXISTS (SELECT 1 FROM rotations r WHERE r.integration_id = i.id AND r.state NOT IN ('done', 'failed'))
                ORDER BY i.credentials_changed_at LIMIT \(bind: limit * 4)
                """
            ).all().map(SQLIntegrationStore.integration)
        }
        var started = 0
        for integration in candidates where started < limit {
            guard integration.rotation.mode == .automatic, RotationPolicy.automaticTypes.contains(integration.type),
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
                        actor: .system, action: .rotationDue, ownerID: integration.ownerID, integrationID: integration.id,
                        detail: ["credential_version": .number(Double(integration.credentialVersion)),
                                 "every_days": .number(Double(integration.rotation.everyDays))]),
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
            id: UUID.timeOrdered(now: now), integrationID: integration.id, ownerID: integration.ownerID, state: .requested,
            oldVersion: integration.credentialVersion, newVersion: nil, oldKeyID: nil, newKeyID: nil, error: nil, attempts: 0,
            nextAt: now, createdAt: now, updatedAt: now)
        return try await database.transaction { sql -> RotationRecord? in
            let lock = database.kind == .postgres ? " FOR UPDATE" : ""
            let unchanged = try await sql.raw(
                """
                SELECT id FROM integrations WHERE id = \(bind: integration.id) AND owner_id = \(bind: integration.ownerID)
                AND current_version = \(bind: integration.credentialVersion) AND enabled\(unsafeRaw: lock)
                """
            ).first()
            guard unchanged != nil else { return nil }
            // The unique index on unfinished rotations decides between instances starting the same one.
            let inserted = try await sql.raw(
                """
                INSERT INTO rotations (id, integration_id, owner_id, state, old_version, attempts, next_at, created_at, updated_at)
                VALUES (\(bind: record.id), \(bind: record.integrationID), \(bind: record.ownerID), \(bind: record.state.rawValue),
                \(bind: record.oldVersion), 0, \(bind: now), \(bind: now), \(bind: now))
                ON CONFLICT DO NOTHING RETURNING id
                """
            ).all().count
            guard inserted == 1 else { return nil }
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .rotationStart, ownerID: record.ownerID, integrationID: record.integrationID,
                    detail: ["rotation_id": .string(record.id.lowercasedText),
                             "credential_version": .number(Double(record.oldVersion))]),
                on: sql)
            return record
        }
    }

    /// Claims up to `limit` unfinished rotations whose next step may run now, leasing each for `lease`.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    public func claim(now: Date, lease: Duration, limit: Int) async throws -> [RotationRecord] {
        try await database.transaction { sql in
            let lock = database.kind == .postgres ? " FOR UPDATE SKIP LOCKED" : ""
            let rows = try await sql.raw(
                """
                SELECT id FROM rotations WHERE state NOT IN ('done', 'failed') AND next_at <= \(bind: now)
                AND (claimed_until IS NULL OR claimed_until < \(bind: now))
                ORDER BY next_at LIMIT \(bind: limit)\(unsafeRaw: lock)
                """
            ).all()
            var claimed: [RotationRecord] = []
            for row in rows {
                let id = try row.decode(column: "id", as: UUID.self)
                let until = now.addingTimeInterval(Double(lease.components.seconds))
                if let updated = try await sql.raw(
                    "UPDATE rotations SET claimed_until = \(bind: until) WHERE id = \(bind: id) RETURNING *"
                ).first() {
                    claimed.append(try Self.record(updated))
                }
            }
            return claimed
        }
    }

    /// Records a step (and releases the claim when `release`), audited unless only the attempt count changed.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    public func save(_ record: RotationRecord, release: Bool = true) async throws {
        try await database.transaction { sql in
            try await write(record, release: release, on: sql)
            try await auditStep(record, on: sql)
            // Once the new credential is current, what is left is retiring the old one: the integration shows
            // whether that is failing.
            guard [.current, .deactivated, .done].contains(record.state) else { return }
            let problem = record.state != .done && record.attempts > 0 ? record.error : nil
            try await sql.raw(
                "UPDATE integrations SET retire_error = \(bind: problem) WHERE id = \(bind: record.integrationID)"
            ).run()
        }
    }

    /// Within the transaction that deletes `integration`: records, for the operator, each provider credential that
    /// Keyhaven made or was to delete and now never will, since the credentials that could are destroyed with the
    /// integration: a new credential not current yet (or one a step may have been making), the old one still
    /// waiting for its grace period to end, and the current one when a rotation made it. Returns their ids.
    static func recordUnretired(_ integration: Integration, now: Date, on sql: any SQLDatabase) async throws -> [String] {
        var unretired: [(rotation: UUID, keyID: String?, reason: String)] = []
        let rotations = try await sql.raw(
            """
            SELECT * FROM rotations WHERE integration_id = \(bind: integration.id) AND (state NOT IN ('done', 'failed')
            OR (state = 'done' AND new_version = \(bind: integration.credentialVersion)))
            """
        ).all().map(record)
        for rotation in rotations {
            switch rotation.state {
            case .requested, .failed:
                break
            case .creating:
                unretired.append((rotation.id, nil, "a rotation was making a new credential at the provider when the integration was deleted; look for one made after \(rotation.updatedAt.timestampText)"))
            case .stored:
                unretired.append((rotation.id, rotation.newKeyID, "made by a rotation and never used: the integration was deleted before it became current"))
            case .current, .deactivated:
                unretired.append((rotation.id, rotation.oldKeyID, "replaced by a rotation and waiting for its grace period to end when the integration was deleted"))
                unretired.append((rotation.id, rotation.newKeyID, "made by a rotation, and not yet retired when the integration was deleted"))
            case .done:
                unretired.append((rotation.id, rotation.newKeyID, "made by a rotation, and the integration's credential when it was deleted"))
            }
        }
        for (rotation, keyID, reason) in unretired {
            try await insertUnretired(keyID, rotation: rotation, integration: integration, reason: reason, now: now, on: sql)
        }
        return unretired.map { $0.keyID ?? "unknown" }
    }

    /// Settles what the operator is told about the credential a rotation was making when its integration was
    /// deleted: the entry that could only say "look for one made after …" goes, and, when the provider refused to
    /// delete it (`refusal`), the credential is listed by its id instead.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    public func settleUnretired(
        _ keyID: String, rotation: RotationRecord, integration: Integration, refusal: String?, now: Date
    ) async throws {
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM unretired_keys WHERE rotation_id = \(bind: rotation.id) AND key_id IS NULL").run()
            guard let refusal else { return }
            try await Self.insertUnretired(
                keyID, rotation: rotation.id, integration: integration,
                reason: "made by a rotation while the integration was being deleted; the provider refused to delete it: \(refusal)",
                now: now, on: sql)
        }
    }

    /// The provider credentials listed for the operator, oldest first.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    public func unretired(limit: Int = 1000) async throws -> [UnretiredKey] {
        try await database.withConnection { sql in
            try await sql.raw("SELECT * FROM unretired_keys ORDER BY created_at LIMIT \(bind: limit)").all().map { row in
                UnretiredKey(
                    id: try row.decode(column: "id", as: UUID.self),
                    workspaceID: try row.decode(column: "workspace_id", as: UUID.self),
                    integrationID: try row.decode(column: "integration_id", as: UUID.self),
                    integrationName: try row.decode(column: "integration_name", as: String.self),
                    integrationType: try row.decode(column: "integration_type", as: String.self),
                    rotationID: try row.decode(column: "rotation_id", as: UUID.self),
                    keyID: try row.decode(column: "key_id", as: String?.self),
                    reason: try row.decode(column: "reason", as: String.self),
                    createdAt: try row.decode(column: "created_at", as: Date.self))
            }
        }
    }

    private static func insertUnretired(
        _ keyID: String?, rotation: UUID, integration: Integration, reason: String, now: Date, on sql: any SQLDatabase
    ) async throws {
        try await sql.raw(
            """
            INSERT INTO unretired_keys (id, workspace_id, integration_id, integration_name, integration_type,
            rotation_id, key_id, reason, created_at)
            VALUES (\(bind: UUID.timeOrdered(now: now)), \(bind: integration.ownerID), \(bind: integration.id),
            \(bind: integration.name), \(bind: integration.type.rawValue), \(bind: rotation), \(bind: keyID),
            \(bind: reason), \(bind: now))
            """
        ).run()
    }

    /// Extends the claim on a rotation.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    public func renew(_ record: RotationRecord, until: Date) async throws {
        try await database.transaction { sql in
            try await sql.raw("UPDATE rotations SET claimed_until = \(bind: until) WHERE id = \(bind: record.id)").run()
        }
    }

    /// The decrypted credentials of one version of the rotation's integration, with the integration.
    ///
    /// - Throws: `notFound` (deleted meanwhile), `decryptionFailed`.
    public func credentials(of record: RotationRecord, version: Int) async throws -> (Integration, Credentials) {
        let integration = try await integrations.get(id: record.integrationID, ownerID: record.ownerID)
        let (plaintext, _) = try await secrets.get(
            SecretOwner(integrationID: record.integrationID, ownerID: record.ownerID), version: version)
        return (integration, try Credentials(type: integration.type, stored: plaintext))
    }

    /// Seals the new credential as a version that is not current yet and records the step, in one transaction:
    /// once the provider has made a credential, it is never only in memory.
    ///
    /// - Throws: `notFound` when the integration was deleted meanwhile (the caller deletes the new credential at the
    ///   provider), `unavailable`.
    public func storeNew(_ credentials: Credentials, keyID: String, for record: RotationRecord, now: Date) async throws -> RotationRecord {
        try await database.transaction { sql in
            let lock = database.kind == .postgres ? " FOR UPDATE" : ""
            guard
                try await sql.raw(
                    """
                    SELECT id FROM integrations WHERE id = \(bind: record.integrationID)
                    AND owner_id = \(bind: record.ownerID)\(unsafeRaw: lock)
                    """
                ).first() != nil
            else { throw KeyhavenError.notFound }
            let version = try await secrets.put(
                try credentials.serialized(), for: SecretOwner(integrationID: record.integrationID, ownerID: record.ownerID),
                makeCurrent: false, on: sql)
            var stored = record
            stored.state = .stored
            stored.newVersion = version.version
            stored.newKeyID = keyID
            stored.attempts = 0
            stored.nextAt = now
            stored.updatedAt = now
            try await write(stored, release: false, on: sql)
            try await auditStep(stored, on: sql)
            return stored
        }
    }

    /// Makes the verified new version current, unless the credentials were replaced meanwhile (then nil: the
    /// caller undoes the new credential).
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    public func makeCurrent(_ record: RotationRecord, hint: String?, graceEnds: Date, now: Date) async throws -> RotationRecord? {
        guard let newVersion = record.newVersion else { return nil }
        return try await database.transaction { sql -> RotationRecord? in
            let updated = try await sql.raw(
                """
                UPDATE integrations SET current_version = \(bind: newVersion), credential_hint = \(bind: hint),
                credentials_changed_at = \(bind: now), status = 'connected', error_message = NULL,
                last_verified_at = \(bind: now), updated_at = \(bind: now)
                WHERE id = \(bind: record.integrationID) AND owner_id = \(bind: record.ownerID)
                AND current_version = \(bind: record.oldVersion) AND enabled
                RETURNING id
                """
            ).all().count
            guard updated == 1 else { return nil }
            var current = record
            current.state = .current
            current.attempts = 0
            current.nextAt = graceEnds
            current.updatedAt = now
            try await write(current, release: false, on: sql)
            try await audit.append(
                AuditEntry(
                    actor: .system, action: .credentialsRotate, ownerID: record.ownerID, integrationID: record.integrationID,
                    detail: ["credential_version": .number(Double(newVersion)), "rotation_id": .string(record.id.lowercasedText)]),
                on: sql)
            return current
        }
    }

    /// Ends a rotation that could not finish: the old credential stays current, and the integration shows why.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    public func fail(_ record: RotationRecord, reason: String, now: Date) async throws {
        var failed = record
        failed.state = .failed
        failed.error = String(reason.prefix(500))
        failed.updatedAt = now
        try await database.transaction { sql in
            try await write(failed, release: true, on: sql)
            try await sql.raw(
                """
                UPDATE integrations SET status = 'error',
                error_message = \(bind: "Automatic rotation failed: \(failed.error ?? ""). The previous credentials are still in use."),
                updated_at = \(bind: now)
                WHERE id = \(bind: record.integrationID) AND owner_id = \(bind: record.ownerID) AND enabled
                """
            ).run()
            try await audit.append(
                AuditEntry(
                    actor: .system, action: .rotationFail, outcome: .failure, ownerID: record.ownerID,
                    integrationID: record.integrationID,
                    detail: ["rotation_id": .string(record.id.lowercasedText), "reason": .string(failed.error ?? ""),
                             "step": .string(record.state.rawValue)]),
                on: sql)
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

    private func write(_ record: RotationRecord, release: Bool, on sql: any SQLDatabase) async throws {
        let claim = release ? ", claimed_until = NULL" : ""
        try await sql.raw(
            """
            UPDATE rotations SET state = \(bind: record.state.rawValue), new_version = \(bind: record.newVersion),
            old_key_id = \(bind: record.oldKeyID), new_key_id = \(bind: record.newKeyID), error = \(bind: record.error),
            attempts = \(bind: record.attempts), next_at = \(bind: record.nextAt), updated_at = \(bind: record.updatedAt)\(unsafeRaw: claim)
            WHERE id = \(bind: record.id)
            """
        ).run()
    }

    private func auditStep(_ record: RotationRecord, on sql: any SQLDatabase) async throws {
        var detail: [String: JSONValue] = [
            "rotation_id": .string(record.id.lowercasedText), "step": .string(record.state.rawValue),
            "attempts": .number(Double(record.attempts)),
        ]
        if let version = record.newVersion { detail["new_version"] = .number(Double(version)) }
        try await audit.append(
            AuditEntry(
                actor: .system, action: .rotationStep, ownerID: record.ownerID, integrationID: record.integrationID,
                detail: detail),
            on: sql)
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
