import Foundation
import KeyhavenCore
import KeyhavenGateway
import KeyhavenWeb
import Logging
import Prometheus
import ServiceLifecycle
import Synchronization

/// Writes gateway usage off the request path (SPEC §13): requests append their event to a bounded in-memory queue
/// and go on; the queue is written in batches, one transaction each, every ``interval``. When the queue is full a
/// request waits for room rather than lose its event; a batch that fails to write stays queued and is tried again.
/// On SIGTERM the server stops taking requests first, then this service writes what is queued before the database
/// closes.
public final class UsageRecorder: Service, Sendable {
    let store: any UsageStore
    let logger: Logger
    /// How many events may wait to be written.
    let capacity: Int
    /// How often the queue is written.
    let interval: Duration

    private struct Queue {
        var pending: [UsageEvent] = []
        /// Requests waiting for room.
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    private let queue = Mutex(Queue())
    /// The most events written in one transaction.
    static let batchSize = 2_000

    /// Creates the recorder.
    public init(store: any UsageStore, logger: Logger, capacity: Int = 100_000, interval: Duration = .milliseconds(100))
    {
        self.store = store
        self.logger = logger
        self.capacity = capacity
        self.interval = interval
    }

    /// Queues `event`; waits only while the queue is full.
    public func record(_ event: UsageEvent) async {
        while true {
            let added = queue.withLock { queue -> Bool in
                guard queue.pending.count < capacity else { return false }
                queue.pending.append(event)
                return true
            }
            if added { return }
            await withCheckedContinuation { continuation in
                let parked = queue.withLock { queue -> Bool in
                    guard queue.pending.count >= capacity else { return false }
                    queue.waiting.append(continuation)
                    return true
                }
                if !parked { continuation.resume() }
            }
        }
    }

    /// Events queued and not yet written.
    public var queued: Int { queue.withLock { $0.pending.count } }

    public func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            // The wait ends early on SIGTERM; the drain below writes what is left.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            await flush()
        }
        // The server has stopped taking requests: write everything, retrying a few times if the database fails.
        var attempts = 0
        while queued > 0, attempts < 20 {
            if await flush() == false {
                attempts += 1
                // Not Task.sleep: a cancelled task would not wait at all.
                await withCheckedContinuation { continuation in
                    DispatchQueue.global().asyncAfter(deadline: .now() + 0.25) { continuation.resume() }
                }
            }
        }
        if queued > 0 {
            logger.error("usage events could not be written before shutdown", metadata: ["events": "\(queued)"])
        }
    }

    /// Writes what is queued, a batch at a time; returns false if a batch failed (it stays queued).
    @discardableResult
    func flush() async -> Bool {
        while true {
            let batch = queue.withLock { Array($0.pending.prefix(Self.batchSize)) }
            guard !batch.isEmpty else { return true }
            do {
                try await store.append(batch)
            } catch {
                logger.warning("usage events not written yet; will retry", metadata: ["events": "\(batch.count)"])
                return false
            }
            let woken = queue.withLock { queue in
                queue.pending.removeFirst(batch.count)
                defer { queue.waiting = [] }
                return queue.waiting
            }
            for continuation in woken { continuation.resume() }
        }
    }
}

/// Turns what a gateway request came to into a priced usage event and metrics.
struct GatewayAccounting: Sendable {
    let recorder: UsageRecorder
    let prices: Prices
    let budgets: Budgets
    let metrics: VerificationMetrics

    @Sendable func record(_ use: GatewayUse) async {
        metrics.recordGateway(type: use.integration.type, status: use.status)
        // A request refused before the provider answered cost nothing and is only counted.
        guard let metered = use.metered else { return }
        let tokens = metered.usage ?? TokenUsage()
        await budgets.countTokens(tokens.totalTokens, of: use.integration, now: use.at)
        await recorder.record(
            UsageEvent(
                ownerID: use.integration.ownerID, integrationID: use.integration.id, type: use.integration.type,
                model: metered.model, source: .gateway, status: use.status, tokens: tokens,
                // No usage reported (a model list, a request cut short) is no tokens billed.
                costMicros: metered.usage == nil
                    ? 0
                    : await prices.cost(
                        use.integration.type, model: metered.model, usage: tokens, ownerID: use.integration.ownerID
                    ).map { min($0, UsageBounds.eventCostMicros) },
                tokenID: use.tokenID, occurredAt: use.at))
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
