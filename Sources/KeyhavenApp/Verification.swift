import AsyncHTTPClient
import Foundation
import KeyhavenCore
import KeyhavenDatabase
import KeyhavenProviders
import KeyhavenStorage
import Logging
import Prometheus
import ServiceLifecycle
import Synchronization

/// Checks integrations against their providers and records the results: the background worker's jobs and the
/// test route's checks run through here.
public struct VerificationRunner: IntegrationTester {
    let store: SQLIntegrationStore
    let context: ProviderClient
    let metrics: ServerMetrics
    let logger: Logger

    /// Checks one claimed integration and records the outcome.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the result cannot be recorded.
    public func run(_ job: SQLIntegrationStore.VerificationJob, action: AuditAction, actor: AuditActor) async throws
        -> VerificationRecord
    {
        // The check has its own timeouts; this deadline is the backstop that keeps one stuck check from holding
        // the worker, and the outcome is recorded for that integration like any other.
        let result =
            await Self.withDeadline(context.timeout + .seconds(5)) { [context] in
                await Verifiers.verify(
                    job.integration.type, credentials: job.credentials, config: job.integration.config, in: context)
            } ?? VerificationResult(outcome: .unreachable, detail: .timedOut)
        let record = VerificationRecord(
            outcome: result.outcome, errorMessage: result.errorMessage, details: result.details, checkedAt: Date(),
            latency: result.latency, detail: result.detail)
        metrics.record(job.integration.type, record)
        try await store.recordVerification(record, for: job.integration, action: action, actor: actor)
        logger.info(
            "verified an integration",
            metadata: [
                "integration_id": "\(job.integration.id)", "provider": "\(job.integration.type.rawValue)",
                "outcome": "\(record.outcome.rawValue)",
            ])
        return record
    }

    /// Runs `work` and returns its result, or nil once `limit` has passed without one; the work is then cancelled
    /// and left to end on its own.
    static func withDeadline<T: Sendable>(_ limit: Duration, _ work: @escaping @Sendable () async -> T) async -> T? {
        let pending = Waiter<T?>()
        return await withCheckedContinuation { continuation in
            pending.set(continuation)
            let worker = Task {
                let value = await work()
                pending.resume(returning: value)
            }
            Task {
                try? await Task.sleep(for: limit)
                if pending.resume(returning: nil) { worker.cancel() }
            }
        }
    }

    public func testNow(id: UUID, ownerID: UUID, actor: AuditActor) async throws -> VerificationRecord {
        try await run(try await store.verificationJob(id: id, ownerID: ownerID), action: .integrationTest, actor: actor)
    }
}

/// The background verifier (SPEC §7): claims integrations waiting in `verifying`, a few at a time, checks them,
/// and records the results. Leases in the database make it safe with several instances, and rows left by a
/// stopped instance are claimed again once their lease expires.
public struct VerificationWorker: Service {
    let runner: VerificationRunner
    let concurrency: Int
    let interval: Duration
    let lease: Duration

    public init(
        runner: VerificationRunner, concurrency: Int = 4, interval: Duration = .milliseconds(500),
        lease: Duration = .seconds(60)
    ) {
        self.runner = runner
        self.concurrency = concurrency
        self.interval = interval
        self.lease = lease
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let processed = try await runOnce()
                if processed == 0 { try await Task.sleep(for: interval) }
            } catch is CancellationError {
                return
            } catch {
                runner.logger.error("verification round failed", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// Claims and checks one batch; returns how many integrations were checked.
    @discardableResult
    public func runOnce() async throws -> Int {
        let jobs = try await runner.store.claimForVerification(limit: concurrency, lease: lease)
        await withTaskGroup(of: Void.self) { group in
            for job in jobs {
                group.addTask {
                    do {
                        _ = try await runner.run(job, action: .integrationVerify, actor: .system)
                    } catch {
                        runner.logger.error(
                            "recording a verification failed", metadata: ["integration_id": "\(job.integration.id)"])
                    }
                }
            }
        }
        return jobs.count
    }
}
