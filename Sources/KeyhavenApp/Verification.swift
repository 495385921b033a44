import AsyncHTTPClient
import Foundation
import KeyhavenCore
import KeyhavenProviders
import KeyhavenStorage
import Logging
import Prometheus
import ServiceLifecycle
import Synchronization

/// Request and verification counts and latencies, for `GET /metrics`. No label carries user data or an id.
public final class VerificationMetrics: Sendable {
    /// The registry `/metrics` renders.
    public let registry = PrometheusCollectorRegistry()

    public init() {}

    func record(_ type: IntegrationType, _ record: VerificationRecord) {
        let labels = [("provider", type.rawValue), ("outcome", record.outcome.rawValue)]
        registry.makeCounter(
            descriptor: .init(metricName: "keyhaven_verifications", unitName: "total", helpText: "Credential checks, by provider and outcome."),
            labels: labels
        ).increment()
        registry.makeDurationHistogram(
            descriptor: .init(metricName: "keyhaven_verification_duration", unitName: "seconds", helpText: "How long credential checks took."),
            labels: [("provider", type.rawValue)],
            buckets: [.milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10)]
        ).record(record.latency)
    }

    /// Counts one gateway request by provider, integration type and status (never by key or integration).
    func recordGateway(type: IntegrationType, status: Int) {
        let provider =
            switch type {
            case .gemini, .googleCloud: "google"
            case .azure: "microsoft"
            default: type.rawValue
            }
        registry.makeCounter(
            descriptor: .init(
                metricName: "keyhaven_gateway_requests", unitName: "total",
                helpText: "Gateway requests, by provider, integration type and status."),
            labels: [("provider", provider), ("integration_type", type.rawValue), ("status", String(status))]
        ).increment()
    }

    /// The counter and histogram of each (method, route, status) seen, made once: every request records here.
    private let requestHandles = Mutex<[String: (Counter, DurationHistogram)]>([:])

    /// Counts one HTTP request by method, route template and status.
    @Sendable func recordRequest(method: String, route: String, status: Int, duration: Duration) {
        let (counter, histogram) = requestHandles.withLock { handles in
            let key = "\(method) \(status) \(route)"
            if let known = handles[key] { return known }
            let made = (
                registry.makeCounter(
                    descriptor: .init(
                        metricName: "keyhaven_http_requests", unitName: "total", helpText: "HTTP requests, by route and status."),
                    labels: [("method", method), ("route", route), ("status", String(status))]),
                registry.makeDurationHistogram(
                    descriptor: .init(
                        metricName: "keyhaven_http_request_duration", unitName: "seconds",
                        helpText: "HTTP request durations, by route."),
                    labels: [("method", method), ("route", route)],
                    buckets: [
                        .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                        .seconds(1), .seconds(5),
                    ])
            )
            handles[key] = made
            return made
        }
        counter.increment()
        histogram.record(duration)
    }

    /// SQLite's write statistics as last rendered, so the counters advance by the difference.
    private let renderedWrites = Mutex(WriteStatistics())

    /// The Prometheus text exposition, with `database`'s SQLite write statistics (transactions, the commits that
    /// stored them, writers waiting now) if it is SQLite.
    public func render(database: Database? = nil) -> String {
        if let now = database?.writeStatistics {
            let (transactions, commits) = renderedWrites.withLock { last in
                defer { last = now }
                return (now.transactions - last.transactions, now.commits - last.commits)
            }
            registry.makeCounter(
                descriptor: .init(
                    metricName: "keyhaven_sqlite_write_transactions", unitName: "total",
                    helpText: "Write transactions on SQLite.")
            ).increment(by: Int64(max(transactions, 0)))
            registry.makeCounter(
                descriptor: .init(
                    metricName: "keyhaven_sqlite_commits", unitName: "total",
                    helpText: "SQLite commits (each stores a group of write transactions with one fsync).")
            ).increment(by: Int64(max(commits, 0)))
            registry.makeGauge(
                descriptor: .init(
                    metricName: "keyhaven_sqlite_writers_waiting", helpText: "Writers waiting for SQLite's writer.")
            ).set(Int64(now.waiting))
        }
        return registry.emitToString()
    }
}

/// Checks integrations against their providers and records the results: the background worker's jobs and the
/// test route's checks run through here.
public struct VerificationRunner: IntegrationTester {
    let store: SQLIntegrationStore
    let context: VerificationContext
    let metrics: VerificationMetrics
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
            metadata: ["integration_id": "\(job.integration.id)", "provider": "\(job.integration.type.rawValue)",
                       "outcome": "\(record.outcome.rawValue)"])
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

    public init(runner: VerificationRunner, concurrency: Int = 4, interval: Duration = .milliseconds(500), lease: Duration = .seconds(60)) {
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
                        runner.logger.error("recording a verification failed", metadata: ["integration_id": "\(job.integration.id)"])
                    }
                }
            }
        }
        return jobs.count
    }
}

