import Foundation
import KeyhavenCore
import KeyhavenDatabase
import Logging
import SQLKit
import Synchronization

/// Credential reads with group commit (SPEC §6, §8).
///
/// Every read must be audited, durably, before its credentials leave the server. Reads that arrive while a group
/// is being written wait and form the next group; each group is one transaction on the writer: one query for the
/// integrations (and their owners), one for the secrets, an update of `last_used_at` where it is a minute old, one
/// insert of all the audit events, and one commit (one fsync). A caller gets its credentials only after that commit,
/// and every caller of a group whose transaction fails gets the error (when the database could not serve it, so
/// do the reads queued behind it): the guarantee of one transaction per read, at the cost of one commit per group.
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

    /// Writes groups until no read is waiting.
    private func drain() async {
        while true {
            var group: [Request] = queue.withLock { queue in
                let group = Array(queue.pending.prefix(Self.maximumGroup))
                queue.pending.removeFirst(group.count)
                if group.isEmpty { queue.draining = false }
                return group
            }
            guard !group.isEmpty else { return }
            let outcomes: [Outcome]
            database.timings.countReadGroup(group.count)
            do {
                outcomes = try await write(group)
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
    }

    /// One group in one transaction; the outcomes in the group's order.
    private func write(_ group: [Request]) async throws -> [Outcome] {
        let ids = Array(Set(group.map(\.id)))
        return try await database.transaction(short: true) { sql in
            // The integrations' rows first, in id order, then the audit chain: the lock order of every writer.
            let lock = database.kind == .postgres ? " ORDER BY i.id FOR NO KEY UPDATE OF i" : ""
            var found: [UUID: CredentialTarget] = [:]
            let readStart = ContinuousClock.now
            for row in try await sql.raw(
                """
                SELECT i.*, u.disabled_at AS owner_disabled_at FROM integrations i
                LEFT JOIN users u ON u.id = i.owner_id
                WHERE i.id IN (\(binds: ids))\(unsafeRaw: lock)
                """
            ).all() {
                let integration = try SQLIntegrationStore.integration(row)
                let ownerDisabled = try row.decode(column: "owner_disabled_at", as: Date?.self) != nil
                found[integration.id] = CredentialTarget(integration: integration, ownerDisabled: ownerDisabled)
            }
            database.timings.add(.readRows, since: readStart)
            // Every read is decided before anything is decrypted; only allowed reads open their secret.
            let decisions = group.map { request in found[request.id].map { request.decide($0) } }
            var readable: [UUID: SecretOwner] = [:]
            for (request, decision) in zip(group, decisions) {
                guard let target = found[request.id], case nil? = decision else { continue }
                readable[request.id] = SecretOwner(integrationID: request.id, ownerID: target.integration.ownerID)
            }
            let opened = try await database.timings.measure(.openSecrets) {
                try await secrets.openCurrent(Array(readable.values), on: sql)
            }

            let now = Date()
            var outcomes: [Outcome] = []
            var entries: [AuditEntry] = []
            var used: Set<UUID> = []
            var undecryptable: Set<UUID> = []
            for (request, decision) in zip(group, decisions) {
                func denied(_ reason: String, owner: UUID?, _ error: KeyhavenError) {
                    entries.append(
                        AuditEntry(
                            actor: request.actor, action: .credentialsRead, outcome: .denied, ownerID: owner,
                            integrationID: request.id, detail: ["reason": .string(reason)]))
                    outcomes.append(.failure(error))
                }
                guard let integration = found[request.id]?.integration, let decision else {
                    denied("not_found", owner: nil, .notFound)
                    continue
                }
                if let denial = decision {
                    denied(denial.reason, owner: denial.recordedIn, denial.error)
                    continue
                }
                func failedToOpen() {
                    undecryptable.insert(request.id)
                    entries.append(
                        AuditEntry(
                            actor: request.actor, action: .credentialsRead, outcome: .failure,
                            ownerID: integration.ownerID,
                            integrationID: request.id, detail: ["reason": .string("decryption_failed")]))
                    outcomes.append(.failure(.decryptionFailed))
                }
                switch opened[request.id] {
                case nil:
                    denied("not_found", owner: nil, .notFound)
                case .failure(.decryptionFailed)?:
                    failedToOpen()
                case .failure(let error)?:
                    // A master key this process cannot load: nothing was read, so nothing is audited.
                    outcomes.append(.failure(error))
                case .success(let (plaintext, version))?:
                    guard let credentials = try? Credentials(type: integration.type, stored: plaintext) else {
                        failedToOpen()
                        continue
                    }
                    var read = integration
                    // Like a token's, an integration's last use is written at most once a minute: a busy one would
                    // otherwise rewrite its row in every group. The row was read in this transaction, under its lock
                    // on PostgreSQL, so a use another group or instance wrote is seen.
                    if read.lastUsedAt.map({ now.timeIntervalSince($0) >= 60 }) ?? true {
                        used.insert(request.id)
                        read.lastUsedAt = now
                    }
                    entries.append(
                        AuditEntry(
                            actor: request.actor, action: .credentialsRead, ownerID: integration.ownerID,
                            integrationID: request.id, detail: ["credential_version": .number(Double(version.version))])
                    )
                    outcomes.append(.success((read, credentials)))
                }
            }
            if !used.isEmpty {
                try await sql.raw(
                    "UPDATE integrations SET last_used_at = \(bind: now) WHERE id IN (\(binds: Array(used)))"
                ).run()
            }
            if !undecryptable.isEmpty {
                // A secret that does not open is shown as status `error` (SPEC §4).
                try await SQLIntegrationStore.markUndecryptable(Array(undecryptable), on: sql)
            }
            try await audit.append(entries, on: sql)
            return outcomes
        }
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
