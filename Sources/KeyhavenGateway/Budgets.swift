import Foundation
import KeyhavenCore
import Synchronization

/// Budgets and rate limits of the gateway (SPEC §13): a request that would exceed a limit of its integration or its
/// workspace is refused before any provider is contacted.
///
/// Limits are read at most every ``cacheLifetime`` per instance, and a month's spending at most every
/// ``spendLifetime`` (spending is known only once answers are priced, so a budget can be overrun by the requests in
/// flight when it is reached). Per-minute counters are the store's: shared by instances on PostgreSQL.
public final class Budgets: Sendable {
    let store: any LimitStore
    let cacheLifetime: Duration
    let spendLifetime: Duration

    private struct Cached<Value: Sendable>: Sendable {
        var value: Value
        var at: ContinuousClock.Instant
    }

    private let limitCache = Mutex<[UUID: Cached<UsageLimits?>]>([:])
    private let spendCache = Mutex<[String: Cached<Int64>]>([:])
    /// The month each subject's budget warning was last seen written (by this request or an earlier one, here or
    /// elsewhere), for ``spendLifetime``: while it holds, a request over the warning share does not ask the database
    /// again. The warning is written once a month, so nothing is missed; a change of limits here forgets it.
    private let warnedCache = Mutex<[UUID: Cached<String>]>([:])

    /// Creates the checks over `store`.
    public init(store: any LimitStore, cacheLifetime: Duration = .seconds(2), spendLifetime: Duration = .seconds(1)) {
        self.store = store
        self.cacheLifetime = cacheLifetime
        self.spendLifetime = spendLifetime
    }

    /// Where an integration stands against its budgets, for pages and the API.
    public struct Standing: Sendable, Equatable {
        public var limits: UsageLimits
        public var spentMicros: Int64

        /// Creates a standing.
        public init(limits: UsageLimits, spentMicros: Int64) {
            self.limits = limits
            self.spentMicros = spentMicros
        }

        /// Spending as a percentage of the monthly budget; nil without a budget.
        public var percent: Int64? {
            guard let budget = limits.monthlyBudgetMicros else { return nil }
            return Saturating.percent(spentMicros, of: budget)
        }
        /// Whether spending has reached the warning share of the budget.
        public var warning: Bool { (percent ?? 0) >= UsageLimits.warningPercent }
    }

    /// The limits of `subject` in workspace `ownerID` and this month's spending against them.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    public func standing(subject: UUID, ownerID: UUID, now: Date = Date()) async throws -> Standing {
        let limits = try await store.limits(for: [subject])[subject] ?? UsageLimits()
        let spent = try await store.spent(
            ownerID: ownerID, integrationID: subject == ownerID ? nil : subject, since: Self.monthStart(now))
        return Standing(limits: limits, spentMicros: spent)
    }

    /// Refuses a request of `integration` that a limit of it or of its workspace does not allow now, and counts
    /// it against the per-minute limits that exist; returns what those limits ask of metering. A limit that counts
    /// usage (a budget, tokens per minute) needs the request metered unless its own owner allowed unmetered
    /// endpoints: an integration's permission does not lift its workspace's budget, nor the reverse.
    ///
    /// - Throws: `KeyhavenError.budgetExceeded` (retry next month), `.rateLimited` (retry next minute),
    ///   `.unavailable`.
    @discardableResult
    public func admit(_ integration: Integration, now: Date = Date()) async throws -> Gateway.Metering {
        let limits = try await cachedLimits([integration.id, integration.ownerID])
        let seconds = Int64(now.timeIntervalSince1970)
        var metering = Gateway.Metering.optional
        for (subject, scope) in [(integration.id, "integration"), (integration.ownerID, "workspace")] {
            guard let limit = limits[subject] ?? nil else { continue }
            if limit.countsUsage {
                metering.required = true
                if !limit.allowsUnmeteredEndpoints { metering.refusesUnmetered = true }
            }
            if let budget = limit.monthlyBudgetMicros {
                let forIntegration = subject == integration.id ? integration.id : nil
                let spent = try await cachedSpent(ownerID: integration.ownerID, integrationID: forIntegration, now: now)
                if Saturating.reaches(spent, percent: UsageLimits.warningPercent, of: budget) {
                    try await warnOnce(
                        subject: subject, ownerID: integration.ownerID, integrationID: forIntegration, now: now,
                        spent: spent, budget: budget)
                }
                if spent >= budget {
                    throw KeyhavenError.budgetExceeded(
                        "The \(scope)'s monthly budget is spent.", retryAfterSeconds: Self.secondsToNextMonth(now))
                }
            }
            guard limit.requestsPerMinute != nil || limit.tokensPerMinute != nil else { continue }
            let (requests, tokens) = try await store.count(
                subject: subject, window: seconds / 60, requests: 1, tokens: 0)
            let overRequests = limit.requestsPerMinute.map { requests > $0 } ?? false
            let overTokens = limit.tokensPerMinute.map { tokens >= $0 } ?? false
            if overRequests || overTokens {
                throw KeyhavenError.rateLimited(retryAfterSeconds: Int(60 - seconds % 60))
            }
        }
        return metering
    }

    /// Adds an answered request's tokens to the per-minute counters of the limits that count tokens.
    public func countTokens(_ tokens: Int64, of integration: Integration, now: Date = Date()) async {
        guard tokens > 0, let limits = try? await cachedLimits([integration.id, integration.ownerID]) else { return }
        for subject in [integration.id, integration.ownerID] where (limits[subject] ?? nil)?.tokensPerMinute != nil {
            _ = try? await store.count(
                subject: subject, window: Int64(now.timeIntervalSince1970) / 60, requests: 0, tokens: tokens)
        }
    }

    /// Forgets what this instance cached about `subject` (its limits just changed here).
    public func forget(_ subject: UUID) {
        limitCache.withLock { _ = $0.removeValue(forKey: subject) }
        warnedCache.withLock { _ = $0.removeValue(forKey: subject) }
    }

    /// Writes `subject`'s budget warning for `now`'s month unless it is there already; a warning seen written
    /// within ``spendLifetime`` is not asked for again.
    private func warnOnce(
        subject: UUID, ownerID: UUID, integrationID: UUID?, now: Date, spent: Int64, budget: Int64
    ) async throws {
        let month = String(now.utcDay.prefix(7))
        let clock = ContinuousClock.now
        if let cached = warnedCache.withLock({ $0[subject] }), cached.value == month, clock - cached.at < spendLifetime
        {
            return
        }
        _ = try await store.warnOnce(
            subject: subject, ownerID: ownerID, integrationID: integrationID, month: month, spent: spent,
            budget: budget)
        warnedCache.withLock { cache in
            if cache.count > 50_000 { cache.removeAll() }
            cache[subject] = Cached(value: month, at: clock)
        }
    }

    private func cachedLimits(_ subjects: [UUID]) async throws -> [UUID: UsageLimits?] {
        let now = ContinuousClock.now
        var result: [UUID: UsageLimits?] = [:]
        var missing: [UUID] = []
        limitCache.withLock { cache in
            for subject in subjects {
                if let cached = cache[subject], now - cached.at < cacheLifetime {
                    result[subject] = cached.value
                } else {
                    missing.append(subject)
                }
            }
        }
        guard !missing.isEmpty else { return result }
        let loaded = try await store.limits(for: missing)
        limitCache.withLock { cache in
            if cache.count > 50_000 { cache.removeAll() }
            for subject in missing {
                cache[subject] = Cached(value: loaded[subject], at: now)
                result[subject] = loaded[subject]
            }
        }
        return result
    }

    private func cachedSpent(ownerID: UUID, integrationID: UUID?, now: Date) async throws -> Int64 {
        let key = "\(ownerID.lowercasedText)/\(integrationID?.lowercasedText ?? "")"
        let clock = ContinuousClock.now
        if let cached = spendCache.withLock({ $0[key] }), clock - cached.at < spendLifetime { return cached.value }
        let spent = try await store.spent(ownerID: ownerID, integrationID: integrationID, since: Self.monthStart(now))
        spendCache.withLock { cache in
            if cache.count > 50_000 { cache.removeAll() }
            cache[key] = Cached(value: spent, at: clock)
        }
        return spent
    }

    /// Midnight UTC of the first day of `date`'s month.
    public static func monthStart(_ date: Date) -> Date {
        let parts = Calendar.utc.dateComponents([.year, .month], from: date)
        return Calendar.utc.date(from: DateComponents(year: parts.year, month: parts.month, day: 1)) ?? date
    }

    static func secondsToNextMonth(_ date: Date) -> Int {
        let next =
            Calendar.utc.date(byAdding: .month, value: 1, to: monthStart(date)) ?? date.addingTimeInterval(86_400)
        return max(1, Int(next.timeIntervalSince(date).rounded(.up)))
    }
}
