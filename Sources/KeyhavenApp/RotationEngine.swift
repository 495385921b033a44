import Foundation
import KeyhavenCore
import KeyhavenProviders
import KeyhavenStorage
import Logging
import ServiceLifecycle

/// The rotation engine (SPEC §15): starts the rotations that are due, writes the reminders, and moves each
/// rotation one persisted step at a time — new credential created at the provider and sealed as a version that is
/// not yet current, verified, made current, the old credential deactivated and deleted after the grace periods.
/// A new credential that does not verify is deleted at the provider and the old one stays current.
public struct RotationEngine: Service {
    let store: SQLRotationStore
    let context: ProviderClient
    let logger: Logger
    let interval: Duration
    let lease: Duration
    /// The time, settable in tests.
    let now: @Sendable () -> Date

    /// How long a new AWS key may take to work everywhere (IAM is eventually consistent).
    static let propagation: TimeInterval = 60
    /// Steps tried this many times in a row without success give up (before the new credential is current).
    static let maximumAttempts = 5

    /// Creates the engine.
    public init(
        store: SQLRotationStore, context: ProviderClient, logger: Logger, interval: Duration = .seconds(30),
        lease: Duration = .seconds(30), now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.store = store
        self.context = context
        self.logger = logger
        self.interval = interval
        self.lease = lease
        self.now = now
    }

    public func run() async throws {
        // The wait between rounds ends with the server's graceful shutdown; a round under way finishes its step.
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await runOnce()
                } catch {
                    logger.error("rotation round failed", metadata: ["error": "\(String(describing: type(of: error)))"])
                }
                try await Task.sleep(for: interval)
            }
        }
    }

    /// One round: start what is due, remind, and advance every rotation whose next step may run; returns how many
    /// rotations were advanced.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    @discardableResult
    public func runOnce() async throws -> Int {
        try await store.startDue(now: now())
        try await store.remindDue(now: now())
        let claimed = try await store.claim(now: now(), lease: lease, limit: 4)
        for record in claimed {
            await advance(record)
        }
        return claimed.count
    }

    /// Runs the rotation's steps for as long as the next one may run now, recording each.
    func advance(_ record: RotationRecord) async {
        var record = record
        var steps = 0
        while !record.state.isFinished && record.nextAt <= now() && steps < 8 {
            steps += 1
            do {
                // Each step gets the whole lease (a step is a few provider calls, each bounded by the timeout), so
                // an instance that died mid-step hands the rotation over within one lease.
                try await store.renew(record, until: now().addingTimeInterval(Double(lease.components.seconds)))
                // nil: the step ended the rotation as failed, and recorded it.
                guard let next = try await step(record) else { return }
                // The store already recorded the steps it takes (stored, current) in their own transactions.
                if next.state != record.state && ![.stored, .current, .done, .failed].contains(next.state) {
                    try await store.save(next, release: false)
                }
                record = next
            } catch KeyhavenError.notFound {
                // The integration was deleted meanwhile, and its rotation with it.
                logger.notice("rotation ended: its integration was deleted", metadata: ["rotation_id": "\(record.id)"])
                return
            } catch {
                logger.error(
                    "rotation step failed",
                    metadata: ["rotation_id": "\(record.id)", "error": "\(String(describing: type(of: error)))"])
                try? await store.save(retrying(record, reason: "the database could not be reached"))
                return
            }
        }
        try? await store.save(record)
    }

    private func step(_ record: RotationRecord) async throws -> RotationRecord? {
        let (integration, old) = try await store.credentials(of: record, version: record.oldVersion)
        guard let rotator = Rotators.rotator(for: integration.type) else {
            try await store.fail(record, reason: "this provider cannot rotate credentials", now: now())
            return nil
        }
        var record = record
        switch record.state {
        case .requested, .creating:
            guard integration.credentialVersion == record.oldVersion, integration.enabled else {
                try await store.fail(
                    record, reason: "the credentials were replaced or the integration disabled first", now: now())
                return nil
            }
            if record.oldKeyID == nil {
                switch await rotator.keyID(of: old, in: context) {
                case .failure(let failure): return try await retryOrFail(record, failure)
                case .success(let keyID): record.oldKeyID = keyID
                }
            }
            if record.state == .creating, let oldKeyID = record.oldKeyID {
                // The last run stopped while the provider was making a credential: remove whatever it made (it was
                // never stored, so nothing can use it) before making another.
                let since = record.updatedAt.addingTimeInterval(-60)
                switch await rotator.strays(
                    since: since, tag: record.id.lowercasedText, keep: oldKeyID, using: old, in: context)
                {
                case .failure(let failure):
                    return try await retryOrFail(record, failure)
                case .success(let strays):
                    for stray in strays {
                        if case .failure(let failure) = await rotator.delete(stray, using: old, in: context) {
                            return try await retryOrFail(record, failure)
                        }
                        logger.notice(
                            "removed a credential an interrupted rotation left at the provider",
                            metadata: ["rotation_id": "\(record.id)"])
                    }
                }
            }
            record.state = .creating
            record.updatedAt = now()
            try await store.save(record, release: false)
            switch await rotator.create(using: old, tag: record.id.lowercasedText, in: context) {
            case .failure(let failure):
                record.state = .requested
                return try await retryOrFail(record, failure)
            case .success(let created):
                do {
                    return try await store.storeNew(created.credentials, keyID: created.keyID, for: record, now: now())
                } catch KeyhavenError.notFound {
                    // Deleted while the provider was making the credential: nothing will ever use it.
                    await retire(created.keyID, using: old, rotator: rotator, record: record, integration: integration)
                    throw KeyhavenError.notFound
                }
            }
        case .stored:
            guard let newVersion = record.newVersion, let newKeyID = record.newKeyID else {
                try await store.fail(record, reason: "the stored step is incomplete", now: now())
                return nil
            }
            let (_, new) = try await store.credentials(of: record, version: newVersion)
            let result = await Verifiers.verify(
                integration.type, credentials: new, config: integration.config, in: context)
            guard result.outcome == .connected else {
                // IAM takes a while to know a new key everywhere: keep trying for a minute before undoing it.
                if integration.type == .aws && now().timeIntervalSince(record.updatedAt) < Self.propagation
                    && result.outcome != .insufficientPermissions
                {
                    record.attempts += 1
                    record.nextAt = now().addingTimeInterval(5)
                    return record
                }
                return try await undo(
                    record, newKeyID: newKeyID, old: old, rotator: rotator,
                    reason: "the new credential did not verify (\(result.errorMessage ?? result.outcome.rawValue))")
            }
            let graceEnds = now().addingTimeInterval(integration.rotation.grace)
            guard let current = try await store.makeCurrent(record, hint: new.hint, graceEnds: graceEnds, now: now())
            else {
                return try await undo(
                    record, newKeyID: newKeyID, old: old, rotator: rotator,
                    reason: "the credentials were replaced or the integration disabled during the rotation")
            }
            return current
        case .current, .deactivated:
            guard let newVersion = record.newVersion, let oldKeyID = record.oldKeyID else {
                try await store.fail(record, reason: "the rotation lost track of the old credential", now: now())
                return nil
            }
            let (_, new) = try await store.credentials(of: record, version: newVersion)
            // Credentials replaced during the grace period: the one this rotation made is retired with the old one,
            // unless it is the one in use now (and the old one stays if the user went back to it).
            var retiring = [oldKeyID]
            if integration.credentialVersion != newVersion, let newKeyID = record.newKeyID {
                let (_, inUse) = try await store.credentials(of: record, version: integration.credentialVersion)
                let secret = try inUse.serialized()
                if secret.constantTimeEquals(try old.serialized()) {
                    retiring = [newKeyID]
                } else if !secret.constantTimeEquals(try new.serialized()) {
                    retiring = [oldKeyID, newKeyID]
                }
            }
            if record.state == .current && integration.type == .aws && retiring.contains(oldKeyID) {
                switch await rotator.deactivate(oldKeyID, using: new, in: context) {
                case .failure(let failure): return retryLater(record, failure)
                case .success:
                    record.state = .deactivated
                    record.attempts = 0
                    record.nextAt = now().addingTimeInterval(integration.rotation.grace)
                    record.updatedAt = now()
                    return record
                }
            }
            // The new credential asks, so it goes last.
            for keyID in retiring {
                switch await rotator.delete(keyID, using: new, in: context) {
                case .failure(let failure) where !failure.message.contains("NoSuchEntity"):
                    return retryLater(record, failure)
                default: continue
                }
            }
            record.state = .done
            record.attempts = 0
            record.updatedAt = now()
            return record
        case .done, .failed:
            return record
        }
    }

    /// Deletes the new credential at the provider (asking with the old one, still current) and fails the rotation.
    private func undo(
        _ record: RotationRecord, newKeyID: String, old: Credentials, rotator: any Rotator, reason: String
    ) async throws -> RotationRecord? {
        if case .failure(let failure) = await rotator.delete(newKeyID, using: old, in: context) {
            logger.warning(
                "could not delete a rotation's unused credential",
                metadata: ["rotation_id": "\(record.id)", "reason": "\(failure.message)"])
        }
        try await store.fail(record, reason: reason, now: now())
        return nil
    }

    /// Deletes a credential this rotation made for an integration deleted meanwhile; lists it for the operator
    /// (`keyhaven rotations unretired`) when the provider refuses.
    private func retire(
        _ keyID: String, using old: Credentials, rotator: any Rotator, record: RotationRecord, integration: Integration
    ) async {
        var refusal: String?
        if case .failure(let failure) = await rotator.delete(keyID, using: old, in: context) {
            refusal = failure.message
            logger.warning(
                "a credential a rotation made for a deleted integration could not be deleted at the provider",
                metadata: ["rotation_id": "\(record.id)", "reason": "\(failure.message)"])
        }
        try? await store.settleUnretired(
            keyID, rotation: record, integration: integration, refusal: refusal, now: now())
    }

    /// Before the new credential is current: transient problems are retried a few times, then the rotation fails.
    private func retryOrFail(_ record: RotationRecord, _ failure: RotationFailure) async throws -> RotationRecord? {
        let transient: Set<VerificationOutcome> = [.rateLimited, .unreachable]
        guard transient.contains(failure.outcome), record.attempts + 1 < Self.maximumAttempts else {
            try await store.fail(record, reason: failure.message, now: now())
            return nil
        }
        return retryLater(record, failure)
    }

    /// After it: the old credential must still be retired, so the step is retried, later each time (at most hourly).
    private func retryLater(_ record: RotationRecord, _ failure: RotationFailure) -> RotationRecord {
        logger.warning(
            "rotation step will be retried", metadata: ["rotation_id": "\(record.id)", "reason": "\(failure.message)"])
        return retrying(record, reason: failure.message)
    }

    private func retrying(_ record: RotationRecord, reason: String) -> RotationRecord {
        var record = record
        record.attempts += 1
        record.error = String(reason.prefix(500))
        record.nextAt = now().addingTimeInterval(min(3600, 30 * pow(2, Double(min(record.attempts, 7)))))
        record.updatedAt = now()
        return record
    }
}
