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
