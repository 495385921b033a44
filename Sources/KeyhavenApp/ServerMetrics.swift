import Foundation
import KeyhavenCore
import KeyhavenDatabase
import Prometheus
import Synchronization

/// Every metric of the server (requests, verifications, the gateway, the database pool), for `GET /metrics`. No
/// label carries user data or an id.
public final class ServerMetrics: Sendable {
    /// The registry `/metrics` renders.
    public let registry = PrometheusCollectorRegistry()

    public init() {}

    func record(_ type: IntegrationType, _ record: VerificationRecord) {
        let labels = [("provider", type.rawValue), ("outcome", record.outcome.rawValue)]
        registry.makeCounter(
            descriptor: .init(
                metricName: "keyhaven_verifications", unitName: "total",
                helpText: "Credential checks, by provider and outcome."),
            labels: labels
        ).increment()
        registry.makeDurationHistogram(
            descriptor: .init(
                metricName: "keyhaven_verification_duration", unitName: "seconds",
                helpText: "How long credential checks took."),
            labels: [("provider", type.rawValue)],
            buckets: [
                .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2),
                .seconds(5), .seconds(10),
            ]
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
                        metricName: "keyhaven_http_requests", unitName: "total",
                        helpText: "HTTP requests, by route and status."),
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

    /// The database's cumulative figures as last rendered, by metric and label, so the counters advance by the
    /// difference.
    private let rendered = Mutex<[String: Int]>([:])

    /// Advances the counter `name{label}` to `total`, from what was last rendered.
    private func advance(_ name: String, help: String, label: (String, String)? = nil, to total: Int, scale: Double = 1)
    {
        let key = "\(name) \(label?.1 ?? "")"
        let delta = rendered.withLock { last in
            defer { last[key] = total }
            return max(total - (last[key] ?? 0), 0)
        }
        let descriptor = MetricNameDescriptor(metricName: name, unitName: "total", helpText: help)
        let counter =
            label.map { registry.makeCounter(descriptor: descriptor, labels: [$0]) }
            ?? registry.makeCounter(descriptor: descriptor)
        if scale == 1 { counter.increment(by: Int64(delta)) } else { counter.increment(by: Double(delta) * scale) }
    }

    /// The Prometheus text exposition, with `database`'s figures: on SQLite its write statistics (transactions, the
    /// commits that stored them, writers waiting now) and its log's commits and frames; on both, the writer's time
    /// by phase and the credential reads' group sizes.
    public func render(database: Database? = nil) -> String {
        if let now = database?.writeStatistics {
            advance("keyhaven_sqlite_write_transactions", help: "Write transactions on SQLite.", to: now.transactions)
            advance(
                "keyhaven_sqlite_commits",
                help: "SQLite commits (each stores a group of write transactions with one fsync).", to: now.commits)
            registry.makeGauge(
                descriptor: .init(
                    metricName: "keyhaven_sqlite_writers_waiting", helpText: "Writers waiting for SQLite's writer.")
            ).set(Int64(now.waiting))
        }
        if let timings = database?.timings.snapshot {
            for (phase, total) in timings.phases {
                advance(
                    "keyhaven_database_writer_seconds", help: "Time spent by the database writer, by phase.",
                    label: ("phase", phase.rawValue), to: total.nanoseconds, scale: 1e-9)
                advance(
                    "keyhaven_database_writer_phases", help: "Times each phase of the database writer ran.",
                    label: ("phase", phase.rawValue), to: total.count)
            }
            for (bucket, groups) in timings.readGroups.enumerated() where groups > 0 {
                advance(
                    "keyhaven_credential_read_groups",
                    help: "Credential-read groups written together, by size (reads: from 2^n up to 2^(n+1) - 1).",
                    label: ("reads", String(1 << bucket)), to: groups)
            }
            if timings.walCommits > 0 {
                advance("keyhaven_sqlite_wal_commits", help: "Commits counted by SQLite's log.", to: timings.walCommits)
                advance(
                    "keyhaven_sqlite_wal_frames", help: "Pages appended to SQLite's log by commits.",
                    to: timings.walFrames)
            }
        }
        return registry.emitToString()
    }
}
