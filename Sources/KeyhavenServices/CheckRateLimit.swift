import Foundation
import KeyhavenCore

/// How many provider checks one user may start (SPEC §6): creating an integration, giving it new credentials,
/// re-enabling it and testing it each make an outbound call with the credentials, so they share one budget per
/// user. Keyhaven is not a bulk oracle for trying stolen keys. Counted in the database, so it holds across
/// instances.
public struct CheckRateLimit: Sendable {
    /// Checks allowed per user in one window.
    public var perUser: Int
    /// The window.
    public var window: Duration

    /// Creates the limit; the default allows 30 checks per user every 10 minutes.
    public init(perUser: Int = 30, window: Duration = .seconds(600)) {
        self.perUser = perUser
        self.window = window
    }

    /// Counts one check for `userID`.
    ///
    /// - Throws: `KeyhavenError.rateLimited` once the budget is spent, `.unavailable` if the database is down.
    public func count(_ userID: UUID, on limiter: any RateLimiter) async throws {
        try await count(key: Self.key(userID), on: limiter)
    }

    /// Counts one check for `userID` as part of the work that starts it (a create): when `limiter` keeps its
    /// counters in the database, the count to make in that work's transaction (one commit, and nothing counted if
    /// the work fails); otherwise counted now, in memory, and nil.
    ///
    /// - Throws: `KeyhavenError.rateLimited` once the budget is spent.
    public func counting(_ userID: UUID, on limiter: any RateLimiter) async throws -> RateCount? {
        guard limiter.countsInDatabase else {
            try await count(userID, on: limiter)
            return nil
        }
        return RateCount(key: Self.key(userID), limit: perUser, window: window)
    }

    private static func key(_ userID: UUID) -> String { "checks:user:\(userID)" }

    /// Counts one usage report of service token `tokenID` (the limit then bounds each token, not each user).
    ///
    /// - Throws: `KeyhavenError.rateLimited` once the budget is spent, `.unavailable` if the database is down.
    public func count(token tokenID: UUID, on limiter: any RateLimiter) async throws {
        try await count(key: "usage-reports:token:\(tokenID)", on: limiter)
    }

    private func count(key: String, on limiter: any RateLimiter) async throws {
        if case .limited(let seconds) = try await limiter.hit(key, limit: perUser, window: window) {
            throw KeyhavenError.rateLimited(retryAfterSeconds: seconds)
        }
    }
}
