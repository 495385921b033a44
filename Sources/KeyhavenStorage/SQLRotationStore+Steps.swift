import Foundation
import KeyhavenCore
import SQLKit

/// A rotation's steps once an instance has claimed it: the lease (``claim(now:lease:limit:)``, ``renew(_:until:)``)
/// and each step recorded, with its audit event, in the transaction that makes it, before the next step begins.
extension SQLRotationStore {
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

    /// Extends the claim on a rotation.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    public func renew(_ record: RotationRecord, until: Date) async throws {
        try await database.transaction { sql in
            try await sql.raw("UPDATE rotations SET claimed_until = \(bind: until) WHERE id = \(bind: record.id)").run()
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
    public func storeNew(_ credentials: Credentials, keyID: String, for record: RotationRecord, now: Date) async throws
        -> RotationRecord
    {
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
                try credentials.serialized(),
                for: SecretOwner(integrationID: record.integrationID, ownerID: record.ownerID),
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
    public func makeCurrent(_ record: RotationRecord, hint: String?, graceEnds: Date, now: Date) async throws
        -> RotationRecord?
    {
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
                    actor: .system, action: .credentialsRotate, ownerID: record.ownerID,
                    integrationID: record.integrationID,
                    detail: [
                        "credential_version": .number(Double(newVersion)),
                        "rotation_id": .string(record.id.lowercasedText),
                    ]),
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
                UPDATE integrations SET status = 'error', error_message =
                \(bind: "Automatic rotation failed: \(failed.error ?? ""). The previous credentials are still in use."),
                updated_at = \(bind: now)
                WHERE id = \(bind: record.integrationID) AND owner_id = \(bind: record.ownerID) AND enabled
                """
            ).run()
            try await audit.append(
                AuditEntry(
                    actor: .system, action: .rotationFail, outcome: .failure, ownerID: record.ownerID,
                    integrationID: record.integrationID,
                    detail: [
                        "rotation_id": .string(record.id.lowercasedText), "reason": .string(failed.error ?? ""),
                        "step": .string(record.state.rawValue),
                    ]),
                on: sql)
        }
    }

    private func write(_ record: RotationRecord, release: Bool, on sql: any SQLDatabase) async throws {
        let claim = release ? ", claimed_until = NULL" : ""
        try await sql.raw(
            """
            UPDATE rotations SET state = \(bind: record.state.rawValue), new_version = \(bind: record.newVersion),
            old_key_id = \(bind: record.oldKeyID), new_key_id = \(bind: record.newKeyID), error = \(bind: record.error),
            attempts = \(bind: record.attempts), next_at = \(bind: record.nextAt),
            updated_at = \(bind: record.updatedAt)\(unsafeRaw: claim)
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
}
