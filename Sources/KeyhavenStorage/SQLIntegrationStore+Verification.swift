import Foundation
import KeyhavenCore
import SQLKit

/// Background checks of integrations' credentials: those waiting in `verifying` are claimed under a lease that grows
/// with each attempt, given up on after ``maxVerificationAttempts``, and each result is recorded with its audit event.
extension SQLIntegrationStore {
    /// An integration claimed for a background check, with its decrypted credentials.
    public struct VerificationJob: Sendable {
        public var integration: Integration
        public var credentials: Credentials
    }

    /// How many times a check may be claimed without a recorded result before the integration is given up on
    /// (set to `error`), so a check that keeps failing (or stopping its process) is not retried in a loop.
    public static let maxVerificationAttempts = 5

    /// Claims up to `limit` integrations waiting in `verifying` whose lease is free or expired.
    ///
    /// Each claim counts an attempt and leases the row for `lease` doubled per earlier attempt (at most an hour):
    /// a check whose result was never recorded is retried later and later, and after
    /// ``maxVerificationAttempts`` the integration is set to `error` with a message saying so, and audited.
    /// On PostgreSQL the rows are locked with `FOR UPDATE SKIP LOCKED`, so instances sharing the database never
    /// claim the same row; on SQLite the write lock does the same. An integration whose credentials cannot be
    /// read is left leased (and logged), not returned.
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    public func claimForVerification(limit: Int, lease: Duration) async throws -> [VerificationJob] {
        let now = Date()
        let claimed = try await database.transaction { sql -> [Integration] in
            let lock = database.kind == .postgres ? " FOR UPDATE SKIP LOCKED" : ""
            let rows = try await sql.raw(
                """
                SELECT id, owner_id, verify_attempts FROM integrations
                WHERE status = \(bind: IntegrationStatus.verifying.rawValue) AND enabled
                AND (verify_claimed_until IS NULL OR verify_claimed_until < \(bind: now))
                ORDER BY updated_at LIMIT \(bind: limit)\(unsafeRaw: lock)
                """
            ).all()
            var integrations: [Integration] = []
            for row in rows {
                let id = try row.decode(column: "id", as: UUID.self)
                let attempts = try row.decode(column: "verify_attempts", as: Int.self)
                if attempts >= Self.maxVerificationAttempts {
                    try await giveUp(
                        id: id, ownerID: try row.decode(column: "owner_id", as: UUID.self), attempts: attempts, on: sql)
                    continue
                }
                let seconds = min(3600, Double(lease.components.seconds) * Double(1 << min(attempts, 12)))
                if let claimed = try await sql.raw(
                    """
                    UPDATE integrations SET verify_claimed_until = \(bind: now.addingTimeInterval(seconds)),
                    verify_attempts = \(bind: attempts + 1) WHERE id = \(bind: id) RETURNING *
                    """
                ).first() {
                    integrations.append(try Self.integration(claimed))
                }
            }
            return integrations
        }
        var jobs: [VerificationJob] = []
        for integration in claimed {
            do {
                jobs.append(
                    VerificationJob(integration: integration, credentials: try await credentials(of: integration)))
            } catch KeyhavenError.decryptionFailed {
                try await recordDecryptionFailure(id: integration.id, actor: .system)
            } catch {
                logger.error(
                    "could not read an integration's credentials for its check; it is retried later",
                    metadata: [
                        "integration_id": "\(integration.id)", "error": "\(String(describing: type(of: error)))",
                    ])
            }
        }
        return jobs
    }

    static func gaveUpMessage(attempts: Int) -> String {
        "Keyhaven could not complete the check after \(attempts) attempts. Test the connection to try again."
    }

    private func giveUp(id: UUID, ownerID: UUID, attempts: Int, on sql: any SQLDatabase) async throws {
        try await sql.raw(
            """
            UPDATE integrations SET status = \(bind: IntegrationStatus.error.rawValue),
            error_message = \(bind: Self.gaveUpMessage(attempts: attempts)),
            verify_claimed_until = NULL, verify_attempts = 0, updated_at = \(bind: Date()) WHERE id = \(bind: id)
            """
        ).run()
        try await audit.append(
            AuditEntry(
                actor: .system, action: .integrationVerify, outcome: .failure, ownerID: ownerID, integrationID: id,
                detail: ["reason": .string("gave_up"), "attempts": .number(Double(attempts))]),
            on: sql)
        logger.warning(
            "gave up checking an integration", metadata: ["integration_id": "\(id)", "attempts": "\(attempts)"])
    }

    /// A secret that does not open is shown as status `error` and audited (SPEC §4).
    private func recordDecryptionFailure(id: UUID, actor: AuditActor) async throws {
        try await database.transaction { sql in
            guard let row = try await sql.raw("SELECT owner_id FROM integrations WHERE id = \(bind: id)").first() else {
                return
            }
            let ownerID = try row.decode(column: "owner_id", as: UUID.self)
            try await Self.markUndecryptable([id], on: sql)
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .credentialsRead, outcome: .failure, ownerID: ownerID, integrationID: id,
                    detail: ["reason": .string("decryption_failed")]),
                on: sql)
        }
    }

    /// The decrypted current credentials of one of the owner's integrations (for a check run now).
    ///
    /// - Throws: `KeyhavenError.notFound`, `.decryptionFailed`.
    public func verificationJob(id: UUID, ownerID: UUID) async throws -> VerificationJob {
        let integration = try await get(id: id, ownerID: ownerID)
        return VerificationJob(integration: integration, credentials: try await credentials(of: integration))
    }

    private func credentials(of integration: Integration) async throws -> Credentials {
        let (plaintext, _) = try await secrets.get(
            SecretOwner(integrationID: integration.id, ownerID: integration.ownerID),
            version: integration.credentialVersion)
        return try Credentials(type: integration.type, stored: plaintext)
    }

    /// Records a check of credential version `version`, and audits it, in one transaction. A result for
    /// credentials that have since been replaced, or for an integration disabled meanwhile, only clears the lease.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    public func recordVerification(
        _ record: VerificationRecord, for integration: Integration, action: AuditAction, actor: AuditActor
    ) async throws {
        try await database.transaction { sql in
            let updated = try await sql.raw(
                """
                UPDATE integrations SET status = \(bind: record.outcome.status.rawValue),
                error_message = \(bind: record.errorMessage), last_verified_at = \(bind: record.checkedAt),
                verification_details = \(bind: Self.encode(record.storedDetails)), verify_claimed_until = NULL,
                verify_attempts = 0
                WHERE id = \(bind: integration.id) AND current_version = \(bind: integration.credentialVersion)
                AND enabled
                RETURNING id
                """
            ).all().count
            if updated == 0 {
                try await sql.raw(
                    """
                    UPDATE integrations SET verify_claimed_until = NULL, \
                    verify_attempts = 0 WHERE id = \(bind: integration.id)
                    """
                ).run()
            }
            var detail = record.details
            detail["outcome"] = .string(record.outcome.rawValue)
            detail["latency_ms"] = .number(Double(record.latency.wholeMilliseconds))
            detail["credential_version"] = .number(Double(integration.credentialVersion))
            if updated == 0 { detail["superseded"] = .bool(true) }
            try await audit.append(
                AuditEntry(
                    actor: actor, action: action, outcome: record.outcome == .connected ? .success : .failure,
                    ownerID: integration.ownerID, integrationID: integration.id, detail: detail),
                on: sql)
        }
    }
}
