import Foundation
import Synchronization

/// Fixed-window counters in this process's memory, with the rules of the database's (`SQLRateLimiter`): a window
/// opens at the first attempt and lasts `window`; the next attempt after it opens a new one. For a counter one
/// instance alone keeps (SQLite's single instance): counting then costs no write transaction. Counts start again
/// when the process does.
public final class InProcessRateLimiter: RateLimiter {
    private struct Counter {
        var start: ContinuousClock.Instant
        var count: Int
    }

    /// Keys kept before expired windows are swept out.
    static let sweepThreshold = 10_000

    private let counters = Mutex<[String: Counter]>([:])

    /// No counts yet.
    public init() {}

    public func hit(_ key: String, limit: Int, window: Duration) async throws -> RateDecision {
        let now = ContinuousClock.now
        let counter = counters.withLock { counters in
            if counters.count >= Self.sweepThreshold { counters = counters.filter { now - $0.value.start < window } }
            var counter = counters[key] ?? Counter(start: now, count: 0)
            if now - counter.start >= window { counter = Counter(start: now, count: 0) }
            counter.count += 1
            counters[key] = counter
            return counter
        }
        guard counter.count > limit else { return .allowed }
        let wait = (counter.start + window - now) / .seconds(1)
        return .limited(retryAfterSeconds: max(1, Int(wait.rounded(.up))))
    }

    public func reset(_ key: String) async throws {
        _ = counters.withLock { $0.removeValue(forKey: key) }
    }
}
