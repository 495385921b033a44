import Foundation
import KeyhavenCore
import SQLKit

/// Provider credentials that Keyhaven made or was to delete and can no longer retire itself (`unretired_keys`):
/// recorded when an integration is deleted during a rotation, and listed for the operator to delete at the provider.
extension SQLRotationStore {
    /// Within the transaction that deletes `integration`: records, for the operator, each provider credential that
    /// Keyhaven made or was to delete and now never will, since the credentials that could are destroyed with the
    /// integration: a new credential not current yet (or one a step may have been making), the old one still
    /// waiting for its grace period to end, and the current one when a rotation made it. Returns their ids.
    static func recordUnretired(_ integration: Integration, now: Date, on sql: any SQLDatabase) async throws -> [String]
    {
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
                unretired.append(
                    (
                        rotation.id, nil,
                        "a rotation was making a new credential at the provider when the integration "
                            + "was deleted; look for one made after \(rotation.updatedAt.timestampText)"
                    ))
            case .stored:
                unretired.append(
                    (
                        rotation.id, rotation.newKeyID,
                        "made by a rotation and never used: the integration was deleted before it became current"
                    ))
            case .current, .deactivated:
                unretired.append(
                    (
                        rotation.id, rotation.oldKeyID,
                        "replaced by a rotation and waiting for its grace "
                            + "period to end when the integration was deleted"
                    ))
                unretired.append(
                    (
                        rotation.id, rotation.newKeyID,
                        "made by a rotation, and not yet retired when the integration was deleted"
                    ))
            case .done:
                unretired.append(
                    (
                        rotation.id, rotation.newKeyID,
                        "made by a rotation, and the integration's credential when it was deleted"
                    ))
            }
        }
        for (rotation, keyID, reason) in unretired {
            try await insertUnretired(
                keyID, rotation: rotation, integration: integration, reason: reason, now: now, on: sql)
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
            try await sql.raw("DELETE FROM unretired_keys WHERE rotation_id = \(bind: rotation.id) AND key_id IS NULL")
                .run()
            guard let refusal else { return }
            try await Self.insertUnretired(
                keyID, rotation: rotation.id, integration: integration,
                reason:
                    "made by a rotation while the integration was being "
                    + "deleted; the provider refused to delete it: \(refusal)",
                now: now, on: sql)
        }
    }

    /// The provider credentials listed for the operator, oldest first.
    ///
    /// - Throws: `unavailable` if the database cannot be reached.
    public func unretired(limit: Int = 1000) async throws -> [UnretiredKey] {
        try await database.withConnection { sql in
            try await sql.raw("SELECT * FROM unretired_keys ORDER BY created_at LIMIT \(bind: limit)").all().map {
                row in
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
}
