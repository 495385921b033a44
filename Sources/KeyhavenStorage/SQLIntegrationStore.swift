import Foundation
import KeyhavenCore
import KeyhavenDatabase
import Logging
import SQLKit

/// Integrations in `integrations`, their credentials in the `SecretStore`, their history in the audit log.
public struct SQLIntegrationStore: IntegrationStore {
    let database: Database
    let secrets: SQLSecretStore
    let audit: SQLAuditLog
    let logger: Logger
    let reads: CredentialReads

    /// Creates the store.
    public init(database: Database, secrets: SQLSecretStore, audit: SQLAuditLog, logger: Logger) {
        self.database = database
        self.secrets = secrets
        self.audit = audit
        self.logger = logger
        self.reads = CredentialReads(database: database, secrets: secrets, audit: audit, logger: logger)
    }

    public func create(
        ownerID: UUID, name: String, type: IntegrationType, config: [String: JSONValue], credentials: Credentials,
        rotation: RotationPolicy, counting check: RateCount?, actor: AuditActor
    ) async throws -> Integration {
        let id = UUID.timeOrdered()
        let now = Date()
        return try await database.transaction(short: true) { sql in
            try await requireFreeName(name, ownerID: ownerID, except: nil, on: sql)
            try await sql.raw(
                """
                INSERT INTO integrations (id, owner_id, name, type, status, enabled, config, credential_hint,
                current_version, rotation, created_at, updated_at)
                VALUES (\(bind: id), \(bind: ownerID), \(bind: name), \
                \(bind: type.rawValue), \(bind: IntegrationStatus.verifying.rawValue), \(bind: true), \
                \(bind: Self.encode(config)), \(bind: credentials.hint), 0, \(bind: try Self.encode(rotation)), \
                \(bind: now), \(bind: now))
                """
            ).run()
            let version = try await secrets.put(
                try credentials.serialized(), for: SecretOwner(integrationID: id, ownerID: ownerID), on: sql)
            let created = try await fetch(id: id, ownerID: ownerID, on: sql)
            // The check counted late, so that the user's counter row is locked only from here to the commit (every
            // create of that user waits for it), then the audit event: on PostgreSQL its lock is held from here to
            // the commit, and every writer waits for it.
            if let check { try await SQLRateLimiter.count(check, on: sql) }
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .integrationCreate, ownerID: ownerID, integrationID: id,
                    detail: [
                        "type": .string(type.rawValue), "name": .string(name),
                        "credential_version": .number(Double(version.version)),
                    ]),
                on: sql)
            return created
        }
    }

    public func list(ownerID: UUID, limit: Int, after cursor: UUID?) async throws -> [Integration] {
        try await database.withConnection(short: true) { sql in
            var query = SQLQueryString("SELECT * FROM integrations WHERE owner_id = \(bind: ownerID)")
            if let cursor {
                query.appendInterpolation(unsafeRaw: " AND id < ")
                query.appendInterpolation(bind: cursor)
            }
            query.appendInterpolation(unsafeRaw: " ORDER BY id DESC LIMIT ")
            query.appendInterpolation(bind: limit)
            return try await sql.raw(query).all().map(Self.integration)
        }
    }

    public func get(id: UUID, ownerID: UUID) async throws -> Integration {
        try await database.withConnection(short: true) { sql in try await fetch(id: id, ownerID: ownerID, on: sql) }
    }

    public func find(id: UUID) async throws -> Integration {
        try await database.withConnection(short: true) { sql in
            guard let row = try await sql.raw("SELECT * FROM integrations WHERE id = \(bind: id)").first() else {
                throw KeyhavenError.notFound
            }
            return try Self.integration(row)
        }
    }

    public func find(id: UUID, for userID: UUID) async throws -> (Integration, WorkspaceRole?) {
        try await database.withConnection(short: true) { sql in
            guard
                let row = try await sql.raw(
                    """
                    SELECT i.*, m.role AS caller_role FROM integrations i
                    LEFT JOIN memberships m ON m.organization_id = i.owner_id AND m.user_id = \(bind: userID)
                    AND NOT m.pending_confirmation
                    WHERE i.id = \(bind: id)
                    """
                ).first()
            else { throw KeyhavenError.notFound }
            let integration = try Self.integration(row)
            if integration.ownerID == userID { return (integration, .owner) }
            guard let text = try row.decode(column: "caller_role", as: String?.self) else { return (integration, nil) }
            guard let role = WorkspaceRole(rawValue: text) else { throw KeyhavenError.internalError }
            return (integration, role)
        }
    }

    public func move(id: UUID, from source: UUID, to target: UUID, actor: AuditActor) async throws -> Integration {
        let moved = try await database.transaction { sql in
            let integration = try await fetch(id: id, ownerID: source, lock: true, on: sql)
            guard source != target else { return integration }
            let rotating = try await sql.raw(
                """
                SELECT id FROM rotations WHERE integration_id = \(bind: id) AND state NOT IN ('done', 'failed')
                """
            ).first()
            if rotating != nil {
                throw KeyhavenError.conflict(
                    "A rotation of this integration is under way; move it once it has finished.")
            }
            try await requireFreeName(integration.name, ownerID: target, except: nil, on: sql)
            // The credentials are opened under the old binding, every old version is destroyed, and they are sealed
            // again as a new version under the new one: no ciphertext bound to the old workspace survives.
            let old = SecretOwner(integrationID: id, ownerID: source)
            let (plaintext, _) = try await secrets.get(old, version: integration.credentialVersion, on: sql)
            let destroyed = try await secrets.destroyAll(old, on: sql)
            try await sql.raw("UPDATE integrations SET owner_id = \(bind: target) WHERE id = \(bind: id)").run()
            let version = try await secrets.put(
                plaintext, for: SecretOwner(integrationID: id, ownerID: target), on: sql)
            // The credentials themselves did not change: their age (for rotation) stays.
            try await sql.raw(
                """
                UPDATE integrations SET credentials_changed_at = \(bind: integration.credentialsChangedAt)
                WHERE id = \(bind: id)
                """
            ).run()
            let detail: [String: JSONValue] = [
                "from_workspace": .string(source.lowercasedText),
                "to_workspace": .string(target.lowercasedText), "name": .string(integration.name),
                "credential_version": .number(Double(version.version)),
                "destroyed_versions": .number(Double(destroyed)),
            ]
            try await audit.append(
                [source, target].map {
                    AuditEntry(actor: actor, action: .integrationMove, ownerID: $0, integrationID: id, detail: detail)
                },
                on: sql)
            return try await fetch(id: id, ownerID: target, on: sql)
        }
        // The old versions were destroyed: their pages leave the database's log too.
        await database.eraseDestroyedFromLog()
        return moved
    }

    public func update(id: UUID, ownerID: UUID, changes: IntegrationChanges, actor: AuditActor) async throws
        -> Integration
    {
        try await database.transaction { sql in
            var integration = try await fetch(id: id, ownerID: ownerID, lock: true, on: sql)
            let owner = SecretOwner(integrationID: id, ownerID: ownerID)
            var entries: [AuditEntry] = []
            func entry(_ action: AuditAction, _ detail: [String: JSONValue] = [:]) {
                entries.append(
                    AuditEntry(actor: actor, action: action, ownerID: ownerID, integrationID: id, detail: detail))
            }
            var renamed: [String: JSONValue] = [:]
            if let name = changes.name, name != integration.name {
                try await requireFreeName(name, ownerID: ownerID, except: id, on: sql)
                renamed["name"] = .string(name)
                integration.name = name
            }
            if let config = changes.config, config != integration.config {
                renamed["config"] = .array(config.keys.sorted().map(JSONValue.string))
                integration.config = config
            }
            if let rotation = changes.rotation, rotation != integration.rotation {
                renamed["rotation"] = .string(rotation.mode.rawValue)
                integration.rotation = rotation
            }
            if !renamed.isEmpty { entry(.integrationUpdate, renamed) }
            if let credentials = changes.credentials {
                let version = try await secrets.put(try credentials.serialized(), for: owner, on: sql)
                integration.credentialVersion = version.version
                integration.credentialHint = credentials.hint
                integration.errorMessage = nil
                if integration.enabled { integration.status = .verifying }
                entry(.credentialsRotate, ["credential_version": .number(Double(version.version))])
            }
            if let enabled = changes.enabled, enabled != integration.enabled {
                integration.enabled = enabled
                // A re-enabled integration is checked again before it shows as connected.
                integration.status = enabled ? .verifying : .disabled
                entry(enabled ? .integrationEnable : .integrationDisable)
            }
            guard !entries.isEmpty else { return integration }
            integration.updatedAt = Date()
            try await sql.raw(
                """
                UPDATE integrations SET name = \(bind: integration.name),
                config = \(bind: Self.encode(integration.config)),
                credential_hint = \(bind: integration.credentialHint), status = \(bind: integration.status.rawValue),
                enabled = \(bind: integration.enabled), error_message = \(bind: integration.errorMessage),
                rotation = \(bind: try Self.encode(integration.rotation)),
                updated_at = \(bind: integration.updatedAt), verify_attempts = 0
                WHERE id = \(bind: id) AND owner_id = \(bind: ownerID)
                """
            ).run()
            for entry in entries { try await audit.append(entry, on: sql) }
            return try await fetch(id: id, ownerID: ownerID, on: sql)
        }
    }

    public func delete(id: UUID, ownerID: UUID, actor: AuditActor) async throws {
        try await database.transaction { sql in
            let integration = try await fetch(id: id, ownerID: ownerID, lock: true, on: sql)
            let unretired = try await SQLRotationStore.recordUnretired(integration, now: Date(), on: sql)
            let destroyed = try await secrets.destroyAll(SecretOwner(integrationID: id, ownerID: ownerID), on: sql)
            try await sql.raw("DELETE FROM integrations WHERE id = \(bind: id) AND owner_id = \(bind: ownerID)").run()
            var detail: [String: JSONValue] = [
                "name": .string(integration.name), "destroyed_versions": .number(Double(destroyed)),
            ]
            if !unretired.isEmpty { detail["unretired_provider_keys"] = .array(unretired.map(JSONValue.string)) }
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .integrationDelete, ownerID: ownerID, integrationID: id, detail: detail),
                on: sql)
        }
        await database.eraseDestroyedFromLog()
    }

    /// Reads are written in groups (``CredentialReads``): each caller's credentials come back only after the
    /// transaction holding its audit event has committed.
    public func readCredentials(
        id: UUID, actor: AuditActor, decide: @escaping @Sendable (CredentialTarget) -> CredentialDenial?
    ) async throws -> (Integration, Credentials) {
        try await reads.read(id: id, actor: actor, decide: decide)
    }

    public func gatewayTarget(id: UUID, decide: (CredentialTarget) -> CredentialDenial?) async throws
        -> (Integration, Credentials)
    {
        try await database.withConnection(short: true) { sql in
            guard
                let row = try await sql.raw(
                    """
                    SELECT i.*, u.disabled_at AS owner_disabled_at FROM integrations i
                    LEFT JOIN users u ON u.id = i.owner_id WHERE i.id = \(bind: id)
                    """
                ).first()
            else { throw KeyhavenError.notFound }
            let integration = try Self.integration(row)
            let ownerDisabled = try row.decode(column: "owner_disabled_at", as: Date?.self) != nil
            if let denial = decide(CredentialTarget(integration: integration, ownerDisabled: ownerDisabled)) {
                throw denial.error
            }
            let (plaintext, _) = try await secrets.get(
                SecretOwner(integrationID: integration.id, ownerID: integration.ownerID),
                version: integration.credentialVersion, on: sql)
            return (integration, try Credentials(type: integration.type, stored: plaintext))
        }
    }

    /// Sets integrations whose current secret does not open to status `error`, saying so.
    static func markUndecryptable(_ ids: [UUID], on sql: any SQLDatabase) async throws {
        try await sql.raw(
            """
            UPDATE integrations SET status = \(bind: IntegrationStatus.error.rawValue),
            error_message = \(bind: "The stored credentials could not be decrypted."), updated_at = \(bind: Date())
            WHERE id IN (\(binds: ids))
            """
        ).run()
    }

    private func requireFreeName(_ name: String, ownerID: UUID, except id: UUID?, on sql: any SQLDatabase) async throws
    {
        let existing = try await sql.raw(
            "SELECT id FROM integrations WHERE owner_id = \(bind: ownerID) AND name = \(bind: name)"
        ).first().map { try $0.decode(column: "id", as: UUID.self) }
        if let existing, existing != id {
            throw KeyhavenError.conflict("This workspace already has an integration with this name.")
        }
    }

    /// One of the owner's integrations; with `lock`, its row is locked first (PostgreSQL), before anything else
    /// the transaction touches.
    private func fetch(id: UUID, ownerID: UUID, lock: Bool = false, on sql: any SQLDatabase) async throws -> Integration
    {
        let clause = lock && database.kind == .postgres ? " FOR UPDATE" : ""
        guard
            let row = try await sql.raw(
                "SELECT * FROM integrations WHERE id = \(bind: id) AND owner_id = \(bind: ownerID)\(unsafeRaw: clause)"
            ).first()
        else { throw KeyhavenError.notFound }
        return try Self.integration(row)
    }

    static func encode(_ config: [String: JSONValue]) -> String {
        SQLAuditLog.canonicalJSON(.object(config))
    }

    /// A rotation policy as stored: nil when off.
    static func encode(_ rotation: RotationPolicy) throws -> String? {
        rotation == .off ? nil : String(decoding: try JSONEncoder().encode(rotation), as: UTF8.self)
    }

    /// A row as an integration. A row that does not decode (an unknown type or status, configuration that is not
    /// an object) is an error, never a default.
    ///
    /// - Throws: `KeyhavenError.internalError` for a row that does not decode.
    static func integration(_ row: any SQLRow) throws -> Integration {
        let configText = try row.decode(column: "config", as: String.self)
        // Most integrations have no settings: skip the parser for them (lists read fifty rows at a time).
        let decoded = configText == "{}" ? .object([:]) : try? JSONValue(parsing: configText)
        guard case .object(let config)? = decoded,
            let type = IntegrationType(stored: try row.decode(column: "type", as: String.self)),
            let status = IntegrationStatus(rawValue: try row.decode(column: "status", as: String.self))
        else { throw KeyhavenError.internalError }
        var rotation = RotationPolicy.off
        if let text = try row.decode(column: "rotation", as: String?.self) {
            guard let policy = try? Database.jsonDecoder.decode(RotationPolicy.self, from: Data(text.utf8)) else {
                throw KeyhavenError.internalError
            }
            rotation = policy
        }
        var integration = Integration(
            id: try row.decode(column: "id", as: UUID.self),
            ownerID: try row.decode(column: "owner_id", as: UUID.self),
            name: try row.decode(column: "name", as: String.self),
            type: type,
            status: status,
            enabled: try row.decode(column: "enabled", as: Bool.self),
            config: config,
            credentialHint: try row.decode(column: "credential_hint", as: String?.self),
            credentialVersion: try row.decode(column: "current_version", as: Int.self),
            errorMessage: try row.decode(column: "error_message", as: String?.self),
            lastVerifiedAt: try row.decode(column: "last_verified_at", as: Date?.self),
            lastUsedAt: try row.decode(column: "last_used_at", as: Date?.self),
            createdAt: try row.decode(column: "created_at", as: Date.self),
            updatedAt: try row.decode(column: "updated_at", as: Date.self))
        integration.rotation = rotation
        integration.credentialsChangedAt = try row.decode(column: "credentials_changed_at", as: Date?.self)
        // Absent before migration 17 (an upgrade's data migrations may read integrations at an older schema).
        if row.contains(column: "retire_error") {
            integration.retireError = try row.decode(column: "retire_error", as: String?.self)
        }
        if row.contains(column: "verification_details") {
            let details = try row.decode(column: "verification_details", as: String?.self)
            integration.verificationProblem = VerificationProblem(stored: details, message: integration.errorMessage)
        }
        return integration
    }
}
