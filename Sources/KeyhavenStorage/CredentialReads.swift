import Foundation
import KeyhavenCore
import KeyhavenDatabase
import Logging
import SQLKit
import Synchronization

/// Credential reads with group commit (SPEC §6, §8).
///
/// Every read must be audited, durably, before its credentials leave the server. Reads that arrive while a group
/// is being written wait and form the next group. On SQLite a group is one write transaction: its integrations (and
/// their owners) read, each read decided, the allowed ones' secrets opened, `last_used_at` updated where it is a
/// minute old, the audit chain extended with one insert of all its events, one commit (one fsync). The commit's
/// fsync, not that work, sets the pace: reading ahead of the writer only made groups smaller. On PostgreSQL a group
/// is two statements (``inTwoStatements(_:)``), or one locked transaction when something changed between them. A
/// caller gets its credentials only after the commit, and every caller of a group whose transaction fails gets the
/// error (when the database could not serve it, so do the reads queued behind it): the guarantee of one
/// transaction per read, at the cost of one commit per group.
final class CredentialReads: Sendable {
    typealias Outcome = Result<(Integration, Credentials), KeyhavenError>

    private struct Request: Sendable {
        let id: UUID
        /// Whether the caller may read the integration (``CredentialAccess``'s decision).
        let decide: @Sendable (CredentialTarget) -> CredentialDenial?
        let actor: AuditActor
        let reply: Waiter<Outcome>
    }

    private struct Queue {
        var pending: [Request] = []
        var draining = false
    }

    /// The most reads written in one transaction.
    static let maximumGroup = 256

    let database: Database
    let secrets: SQLSecretStore
    let audit: SQLAuditLog
    let logger: Logger
    private let queue = Mutex(Queue())

    init(database: Database, secrets: SQLSecretStore, audit: SQLAuditLog, logger: Logger) {
        self.database = database
        self.secrets = secrets
        self.audit = audit
        self.logger = logger
    }

    /// Reads one integration's credentials if `decide` allows it, audited in the next group.
    ///
    /// - Throws: `KeyhavenError.notFound`, `.decryptionFailed`, `.unavailable` (nothing was recorded, nothing is
    ///   returned), the error of a denial.
    func read(
        id: UUID, actor: AuditActor, decide: @escaping @Sendable (CredentialTarget) -> CredentialDenial?
    ) async throws -> (Integration, Credentials) {
        let reply = Waiter<Outcome>()
        let outcome = await withCheckedContinuation { continuation in
            reply.set(continuation)
            let startDrain = queue.withLock { queue in
                queue.pending.append(Request(id: id, decide: decide, actor: actor, reply: reply))
                if queue.draining { return false }
                queue.draining = true
                return true
            }
            if startDrain { Task { await drain() } }
        }
        return try outcome.get()
    }

    /// Writes groups until no read is waiting; the reads that arrive while one is written form the next.
    private func drain() async {
        while true {
            let group: [Request] = queue.withLock { queue in
                let group = Array(queue.pending.prefix(Self.maximumGroup))
                queue.pending.removeFirst(group.count)
                if group.isEmpty { queue.draining = false }
                return group
            }
            guard !group.isEmpty else { return }
            await write(group)
        }
    }

    /// Writes one group and answers its callers: with their outcomes once committed, or all with the error that
    /// lost the transaction.
    private func write(_ group: [Request]) async {
        var group = group
        let outcomes: [Outcome]
        do {
            if database.kind == .postgres, let written = try await inTwoStatements(group) {
                outcomes = written
            } else {
                outcomes = try await database.transaction(short: true) { sql in
                    let prepared = try await prepare(group, on: sql)
                    return try await finish(group, prepared, lastUsed: prepared.lastUsed, on: sql)
                }
            }
            database.timings.countReadGroup(group.count)
        } catch {
            let failure = (error as? KeyhavenError) ?? .unavailable("The database is unavailable.")
            // The reads that queued behind a group the database did not serve (a hung server takes the whole
            // query deadline to say so) get the same answer now, rather than waiting out a deadline of their own.
            if case .unavailable = failure {
                group += queue.withLock { queue in
                    defer { queue.pending.removeAll() }
                    return queue.pending
                }
            }
            outcomes = group.map { _ in .failure(failure) }
        }
        for (request, outcome) in zip(group, outcomes) { request.reply.resume(returning: outcome) }
    }

    /// What a group's reads found: each integration with its owner's state, each read's decision, and the opened
    /// current secrets of the allowed ones.
    private struct Prepared: Sendable {
        var found: [UUID: CredentialTarget] = [:]
        var decisions: [CredentialDenial??] = []
        var opened: [UUID: Result<(SecretBytes, SecretVersionInfo), KeyhavenError>] = [:]

        /// Each found integration's last use, as read.
        var lastUsed: [UUID: Date] { found.compactMapValues(\.integration.lastUsedAt) }

        /// Adds the integration and owner state in `row` (columns of `integrations` and `owner_disabled_at`).
        mutating func add(_ row: any SQLRow) throws {
            let integration = try SQLIntegrationStore.integration(row)
            let ownerDisabled = try row.decode(column: "owner_disabled_at", as: Date?.self) != nil
            found[integration.id] = CredentialTarget(integration: integration, ownerDisabled: ownerDisabled)
        }

        /// Decides every read of `group` on what was found, before anything is decrypted; returns the owners of
        /// the secrets the allowed reads may open.
        mutating func decide(_ group: [Request]) -> [UUID: SecretOwner] {
            decisions = group.map { request in found[request.id].map { request.decide($0) } }
            var readable: [UUID: SecretOwner] = [:]
            for (request, decision) in zip(group, decisions) {
                guard let target = found[request.id], case nil? = decision else { continue }
                readable[request.id] = SecretOwner(integrationID: request.id, ownerID: target.integration.ownerID)
            }
            return readable
        }
    }

    /// Reads the group's integrations (locked in id order on PostgreSQL, the lock order of every writer), decides
    /// each read, and opens the allowed ones' current secrets.
    private func prepare(_ group: [Request], on sql: any SQLDatabase) async throws -> Prepared {
        let ids = Array(Set(group.map(\.id)))
        var prepared = Prepared()
        try await database.timings.measure(.readRows) {
            let lock = database.kind == .postgres ? " ORDER BY i.id FOR NO KEY UPDATE OF i" : ""
            for row in try await sql.raw(
                """
                SELECT i.*, u.disabled_at AS owner_disabled_at FROM integrations i
                LEFT JOIN users u ON u.id = i.owner_id
                WHERE i.id IN (\(binds: ids))\(unsafeRaw: lock)
                """
            ).all() {
                try prepared.add(row)
            }
        }
        let readable = prepared.decide(group)
        prepared.opened = try await database.timings.measure(.openSecrets) {
            try await secrets.openCurrent(Array(readable.values), on: sql)
        }
        return prepared
    }

    /// What a group's reads come to: each caller's outcome in the group's order, and what is written for them.
    private struct Settled {
        var outcomes: [Outcome] = []
        var entries: [AuditEntry] = []
        /// The integrations whose last use is written (at most once a minute each).
        var used: Set<UUID> = []
        /// The integrations whose current secret did not open.
        var undecryptable: Set<UUID> = []
    }

    /// The group's outcomes and audit events, on what `prepared` found and with each integration's `lastUsed`.
    private func settle(_ group: [Request], _ prepared: Prepared, lastUsed: [UUID: Date], now: Date) -> Settled {
        var settled = Settled()
        for (request, decision) in zip(group, prepared.decisions) {
            func denied(_ reason: String, owner: UUID?, _ error: KeyhavenError) {
                settled.entries.append(
                    AuditEntry(
                        actor: request.actor, action: .credentialsRead, outcome: .denied, ownerID: owner,
                        integrationID: request.id, detail: ["reason": .string(reason)]))
                settled.outcomes.append(.failure(error))
            }
            guard let integration = prepared.found[request.id]?.integration, let decision else {
                denied("not_found", owner: nil, .notFound)
                continue
            }
            if let denial = decision {
                denied(denial.reason, owner: denial.recordedIn, denial.error)
                continue
            }
            func failedToOpen() {
                settled.undecryptable.insert(request.id)
                settled.entries.append(
                    AuditEntry(
                        actor: request.actor, action: .credentialsRead, outcome: .failure,
                        ownerID: integration.ownerID,
                        integrationID: request.id, detail: ["reason": .string("decryption_failed")]))
                settled.outcomes.append(.failure(.decryptionFailed))
            }
            switch prepared.opened[request.id] {
            case nil:
                denied("not_found", owner: nil, .notFound)
            case .failure(.decryptionFailed)?:
                failedToOpen()
            case .failure(let error)?:
                // A master key this process cannot load: nothing was read, so nothing is audited.
                settled.outcomes.append(.failure(error))
            case .success(let (plaintext, version))?:
                guard let credentials = try? Credentials(type: integration.type, stored: plaintext) else {
                    failedToOpen()
                    continue
                }
                var read = integration
                // Like a token's, an integration's last use is written at most once a minute: a busy one would
                // otherwise rewrite its row in every group. The last use was read with the group's rows, so a use
                // another group or instance wrote is seen.
                read.lastUsedAt = lastUsed[request.id]
                if read.lastUsedAt.map({ now.timeIntervalSince($0) >= 60 }) ?? true {
                    settled.used.insert(request.id)
                    read.lastUsedAt = now
                }
                settled.entries.append(
                    AuditEntry(
                        actor: request.actor, action: .credentialsRead, ownerID: integration.ownerID,
                        integrationID: request.id, detail: ["credential_version": .number(Double(version.version))])
                )
                settled.outcomes.append(.success((read, credentials)))
            }
        }
        return settled
    }

    /// The group's outcomes in its order, with their audit events, last uses and undecryptable marks written in
    /// the transaction `sql`.
    private func finish(
        _ group: [Request], _ prepared: Prepared, lastUsed: [UUID: Date], on sql: any SQLDatabase
    ) async throws -> [Outcome] {
        let now = Date()
        let settled = settle(group, prepared, lastUsed: lastUsed, now: now)
        if !settled.used.isEmpty {
            try await sql.raw(
                "UPDATE integrations SET last_used_at = \(bind: now) WHERE id IN (\(binds: Array(settled.used)))"
            ).run()
        }
        if !settled.undecryptable.isEmpty {
            // A secret that does not open is shown as status `error` (SPEC §4).
            try await SQLIntegrationStore.markUndecryptable(Array(settled.undecryptable), on: sql)
        }
        try await audit.append(settled.entries, on: sql)
        return settled.outcomes
    }

    /// On PostgreSQL, a group in two statements, each its own transaction. The first reads the integrations, their
    /// owners' state, their current secrets and the audit chain's head; the reads are decided and the allowed ones'
    /// secrets opened here; the second, under the audit lock, writes the group's events and last uses only if every
    /// integration still has the owner, type, enabled state, current version and owner state it was decided on
    /// (each row locked as it is checked) and no other writer extended the chain after its head was read, and
    /// nothing otherwise. Then, and when a secret did not open (it is then marked), the group is done in one locked
    /// transaction instead: nil.
    private func inTwoStatements(_ group: [Request]) async throws -> [Outcome]? {
        try await database.withConnection(short: true) { sql in
            let ids = Set(group.map(\.id))
            let rows = try await database.timings.measure(.readRows) {
                try await sql.raw(
                    """
                    SELECT h.seq AS head_seq, h.hash AS head_hash, i.*, u.disabled_at AS owner_disabled_at,
                    s.id AS secret_id, s.version AS secret_version, s.kek_id AS secret_kek_id,
                    s.wrapped_dek AS secret_wrapped_dek, s.nonce AS secret_nonce, s.ciphertext AS secret_ciphertext,
                    s.created_at AS secret_created_at
                    FROM (SELECT 1) AS one
                    LEFT JOIN LATERAL (SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1) AS h ON true
                    LEFT JOIN integrations i ON i.id = ANY(string_to_array(\(bind: Self.list(ids)), ',')::uuid[])
                    LEFT JOIN users u ON u.id = i.owner_id
                    LEFT JOIN secrets s
                    ON s.integration_id = i.id AND s.owner_id = i.owner_id AND s.version = i.current_version
                    """
                ).all()
            }
            let head = try audit.head(rows.first, seq: "head_seq", hash: "head_hash")
            var prepared = Prepared()
            var sealed: [UUID: any SQLRow] = [:]
            for row in rows {
                guard let id = try row.decode(column: "id", as: UUID?.self) else { continue }
                try prepared.add(row)
                if try row.decode(column: "secret_id", as: UUID?.self) != nil { sealed[id] = row }
            }
            let readable = prepared.decide(group).values.compactMap { owner in
                sealed[owner.integrationID].map { (row: $0, owner: owner) }
            }
            prepared.opened = try await database.timings.measure(.openSecrets) {
                try await secrets.open(readable, prefix: "secret_", on: sql)
            }
            let now = Date()
            let settled = settle(group, prepared, lastUsed: prepared.lastUsed, now: now)
            guard settled.undecryptable.isEmpty else { return nil }
            // Only reads refused for a master key this process cannot load: nothing to record.
            guard !settled.entries.isEmpty else { return settled.outcomes }
            let query = conditionalWrite(settled, checking: Array(prepared.found.values), after: head, now: now)
            let written = try await database.timings.measure(.checkedWrite) { try await sql.raw(query).all() }
            return written.count == settled.entries.count ? settled.outcomes : nil
        }
    }

    /// The second statement of ``inTwoStatements(_:)``: the check of every target (locked in id order, the lock
    /// order of every writer, then the audit lock), the events and the last uses, the latter two written only if
    /// every check held and no other writer extended the chain; returns one row per event written. One shape, with
    /// its lists as single binds, whatever the group's size: the server plans it once per connection.
    private func conditionalWrite(
        _ settled: Settled, checking targets: [CredentialTarget], after head: SQLAuditLog.Head, now: Date
    ) -> SQLQueryString {
        let checks = JSONValue.array(
            targets.map { target in
                .object([
                    "id": .string(target.integration.id.lowercasedText),
                    "owner_id": .string(target.integration.ownerID.lowercasedText),
                    "type": .string(target.integration.type.rawValue), "enabled": .bool(target.integration.enabled),
                    "current_version": .string(String(target.integration.credentialVersion)),
                    "owner_disabled": .bool(target.ownerDisabled),
                ])
            }
        ).jsonText
        let events = SQLAuditLog.json(audit.events(settled.entries, after: head))
        let columns = SQLAuditLog.columns
        // The audit lock is taken only once the rows are locked (CASE evaluates its condition first). The first
        // event goes in unless its sequence number is taken (by an event another writer appended after the head
        // was read); the others, and the last uses, only if it went in.
        return """
            WITH targets AS (SELECT * FROM jsonb_to_recordset(\(bind: checks)::jsonb) AS t (id uuid, owner_id uuid, \
            type text, enabled boolean, current_version integer, owner_disabled boolean)), \
            checked AS (SELECT i.id FROM integrations i LEFT JOIN users u ON u.id = i.owner_id JOIN targets t \
            ON t.id = i.id AND t.owner_id = i.owner_id AND t.type = i.type AND t.enabled = i.enabled \
            AND t.current_version = i.current_version AND t.owner_disabled = (u.disabled_at IS NOT NULL) \
            ORDER BY i.id FOR NO KEY UPDATE OF i), \
            ok AS (SELECT CASE WHEN (SELECT count(*) FROM checked) = (SELECT count(*) FROM targets) \
            THEN (SELECT true FROM (\(Database.advisoryLock("audit"))) AS locked) ELSE false END AS ok), \
            events AS (SELECT * FROM jsonb_to_recordset(\(bind: events)::jsonb) \
            AS e (\(unsafeRaw: SQLAuditLog.recordColumns))), \
            first AS (INSERT INTO audit_events (\(unsafeRaw: columns)) SELECT \(unsafeRaw: columns) FROM events \
            WHERE seq = \(bind: head.seq + 1) AND (SELECT ok FROM ok) ON CONFLICT (seq) DO NOTHING RETURNING seq), \
            rest AS (INSERT INTO audit_events (\(unsafeRaw: columns)) SELECT \(unsafeRaw: columns) FROM events \
            WHERE seq > \(bind: head.seq + 1) AND EXISTS (SELECT 1 FROM first) RETURNING seq), \
            used AS (UPDATE integrations SET last_used_at = \(bind: now) \
            WHERE id = ANY(string_to_array(\(bind: Self.list(settled.used)), ',')::uuid[]) \
            AND EXISTS (SELECT 1 FROM first)) \
            SELECT seq FROM first UNION ALL SELECT seq FROM rest
            """
    }

    /// Ids as one text, comma-separated, for `string_to_array(…, ',')::uuid[]`.
    private static func list(_ ids: some Collection<UUID>) -> String {
        ids.map(\.lowercasedText).joined(separator: ",")
    }
}

/// A continuation resumed once, by whichever of several tasks gets there first.
public final class Waiter<T: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<T, Never>?>(nil)

    /// Creates an empty waiter; ``set(_:)`` gives it the continuation to resume.
    public init() {}

    /// The continuation to resume.
    public func set(_ waiting: CheckedContinuation<T, Never>) { continuation.withLock { $0 = waiting } }

    /// Resumes with `value` unless already resumed; returns whether this call did it.
    @discardableResult
    public func resume(returning value: T) -> Bool {
        guard let waiting = continuation.withLock({ $0.take() }) else { return false }
        waiting.resume(returning: value)
        return true
    }
}
