import Foundation
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices
import Logging
import Prometheus
import ServiceLifecycle
import Synchronization

/// Writes gateway usage off the request path (SPEC §13): requests append their event to a bounded in-memory queue
/// and go on; the queue is written in batches, one transaction each, every ``interval``. On SIGTERM the server stops
/// taking requests first, then this service writes what is queued before the database closes.
///
/// A gateway answer never waits for it. When the queue is full (the database has been failing for a while),
/// a new event is dropped and counted (`keyhaven_usage_events_dropped_total`) rather than hold up every answer: the
/// queue's bound is what keeps memory finite, and budgets already lag the events in flight. A batch that fails while
/// the database answers holds an event the database refuses: it is split in halves until that event fails alone,
/// and that one is set aside (logged, counted in `keyhaven_usage_events_set_aside_total`), so one bad event never
/// blocks the queue for every workspace. A batch that fails because the database is down stays queued, whole.
public final class UsageRecorder: Service, Sendable {
    let store: any UsageStore
    let logger: Logger
    /// How many events may wait to be written.
    let capacity: Int
    /// How often the queue is written.
    let interval: Duration
    let dropped: Counter
    let setAside: Counter

    private struct Queue {
        var pending: [UsageEvent] = []
        /// Events dropped since the last log line about it.
        var droppedUnlogged = 0
    }

    private let queue = Mutex(Queue())
    /// The most events written in one transaction.
    static let batchSize = 2_000
    /// The recording of answers already passed on (pricing them and queueing their events), started off the
    /// answers' path: the drain on SIGTERM waits for it, so an answered request's event is never left out.
    public let pending = PendingWork()
    /// The longest the drain waits for ``pending`` work (which may be waiting for a failing database).
    static let pendingWait: Duration = .seconds(10)

    /// Creates the recorder; its counters are registered in `registry` (the one `/metrics` renders).
    public init(
        store: any UsageStore, logger: Logger, capacity: Int = 100_000, interval: Duration = .milliseconds(100),
        registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()
    ) {
        self.store = store
        self.logger = logger
        self.capacity = capacity
        self.interval = interval
        dropped = registry.makeCounter(
            descriptor: .init(
                metricName: "keyhaven_usage_events_dropped", unitName: "total",
                helpText: "Gateway usage events dropped because the queue was full (the database was failing)."))
        setAside = registry.makeCounter(
            descriptor: .init(
                metricName: "keyhaven_usage_events_set_aside", unitName: "total",
                helpText: "Usage events the database refused on their own, set aside so the queue goes on."))
    }

    /// Queues `event` without waiting; returns false if the queue was full and the event was dropped. A model name
    /// that may not be stored (``ModelName``) is dropped from the event, which keeps its tokens.
    @discardableResult
    public func record(_ event: UsageEvent) -> Bool {
        var event = event
        event.model = ModelName.validated(event.model)
        let added = queue.withLock { queue -> Bool in
            guard queue.pending.count < capacity else {
                queue.droppedUnlogged += 1
                return false
            }
            queue.pending.append(event)
            return true
        }
        if !added { dropped.increment() }
        return added
    }

    /// Events queued and not yet written.
    public var queued: Int { queue.withLock { $0.pending.count } }

    public func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            // The wait ends early on SIGTERM; the drain below writes what is left.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            await flush()
        }
        // The server has stopped taking requests; the answers it passed on last may still be being recorded.
        let waitStart = ContinuousClock.now
        while pending.count > 0, ContinuousClock.now - waitStart < Self.pendingWait {
            await Self.pause(seconds: 0.001)
        }
        if pending.count > 0 {
            logger.error(
                "usage of some answers was still being recorded at shutdown", metadata: ["answers": "\(pending.count)"])
        }
        // Write everything, retrying a few times if the database fails.
        var attempts = 0
        while queued > 0, attempts < 20 {
            if await flush() == false {
                attempts += 1
                await Self.pause(seconds: 0.25)
            }
        }
        if queued > 0 {
            logger.error("usage events could not be written before shutdown", metadata: ["events": "\(queued)"])
        }
    }

    /// Waits `seconds`; not Task.sleep, which a cancelled task would not wait in at all.
    private static func pause(seconds: Double) async {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { continuation.resume() }
        }
    }

    /// Writes what is queued, a batch at a time; returns false if the database failed (what was not written stays
    /// queued).
    @discardableResult
    func flush() async -> Bool {
        let droppedCount = queue.withLock { queue in
            defer { queue.droppedUnlogged = 0 }
            return queue.droppedUnlogged
        }
        if droppedCount > 0 {
            logger.error("usage queue full: gateway usage events dropped", metadata: ["events": "\(droppedCount)"])
        }
        while true {
            let batch = queue.withLock { Array($0.pending.prefix(Self.batchSize)) }
            guard !batch.isEmpty else { return true }
            do {
                try await store.append(batch)
                queue.withLock { $0.pending.removeFirst(batch.count) }
                continue
            } catch {}
            var done = Set<UUID>()
            let answering = await writeSplitting(batch[...], done: &done)
            if !done.isEmpty { queue.withLock { $0.pending.removeAll { done.contains($0.id) } } }
            guard answering else {
                logger.warning("usage events not written yet; will retry", metadata: ["events": "\(batch.count)"])
                return false
            }
        }
    }

    /// Writes `events` that failed together, halving them until each part is written or an event fails alone
    /// (tried twice, in case the failure was a passing conflict between writers): that one is set aside. Adds the
    /// ids written or set aside to `done`; returns false, and stops, once the database itself does not answer.
    private func writeSplitting(_ events: ArraySlice<UsageEvent>, done: inout Set<UUID>) async -> Bool {
        guard (try? await store.ping()) != nil else { return false }
        if events.count == 1, let event = events.first {
            if (try? await store.append([event])) == nil {
                guard (try? await store.ping()) != nil else { return false }
                setAside.increment()
                logger.error(
                    "a usage event the database refuses was set aside",
                    metadata: [
                        "event": "\(event.id.lowercasedText)", "workspace": "\(event.ownerID.lowercasedText)",
                        "integration": "\(event.integrationID.lowercasedText)", "source": "\(event.source.rawValue)",
                        "input_tokens": "\(event.tokens.inputTokens)", "output_tokens": "\(event.tokens.outputTokens)",
                        "cost_micros": "\(event.costMicros.map(String.init) ?? "none")",
                    ])
            }
            done.insert(event.id)
            return true
        }
        let middle = events.startIndex + events.count / 2
        for part in [events[..<middle], events[middle...]] {
            if (try? await store.append(Array(part))) != nil {
                done.formUnion(part.map(\.id))
            } else if !(await writeSplitting(part, done: &done)) {
                return false
            }
        }
        return true
    }
}

/// Turns what a gateway request came to into a priced usage event and metrics.
struct GatewayAccounting: Sendable {
    let recorder: UsageRecorder
    let prices: Prices
    let budgets: Budgets
    let metrics: ServerMetrics

    @Sendable func record(_ use: GatewayUse) async {
        metrics.recordGateway(type: use.integration.type, status: use.status)
        // A request refused before the provider answered cost nothing and is only counted.
        guard let metered = use.metered else { return }
        let (tokens, estimated) = metered.charge(status: use.status)
        let model = ModelName.validated(metered.model)
        await budgets.countTokens(tokens.totalTokens, of: use.integration, now: use.at)
        recorder.record(
            UsageEvent(
                ownerID: use.integration.ownerID, integrationID: use.integration.id, type: use.integration.type,
                model: model, source: .gateway, status: use.status, tokens: tokens,
                // Nothing charged (a model list, an error answer) costs nothing, whatever the model's price.
                costMicros: metered.usage == nil && !estimated
                    ? 0
                    : await prices.cost(
                        use.integration.type, model: model, usage: tokens, ownerID: use.integration.ownerID
                    ).map { min($0, UsageBounds.eventCostMicros) },
                tokenID: use.tokenID, occurredAt: use.at, estimated: estimated))
    }
}

/// Loads a newly imported price table (`keyhaven prices import`) every 30 seconds.
struct PriceRefresher: Service {
    let prices: Prices
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(30)) }
            if !(await prices.refresh()) {
                logger.error("the imported price table could not be read; the table in use stays")
            }
        }
    }
}
