import Foundation
import KeyhavenCore
import KeyhavenTestSupport
import SQLKit
import Testing

@testable import KeyhavenStorage

@Suite("Rate limits")
struct RateLimiterTests {
    @Test(
        "a stored window start at the edge of the range gives a wait of at most one window, never a trap",
        arguments: TestDatabase.all)
    func extremeRow(kind: TestDatabase) async throws {
        let handle = try await kind.make()
        let limiter = SQLRateLimiter(database: handle.database)
        for start in [Int64.max, Int64.min + 1, 0] {
            let key = "edge-\(start)"
            _ = try await limiter.hit(key, limit: 1, window: .seconds(60))
            try await handle.database.transaction { sql in
                try await sql.raw(
                    """
                    UPDATE rate_limits SET window_start = \(bind: start), \
                    count = 5 WHERE key = \(bind: TokenMaterial.hash(key))
                    """
                ).run()
            }
            let decision = try await limiter.hit(key, limit: 1, window: .seconds(60))
            if case .limited(let wait) = decision { #expect((1...60).contains(wait), "\(start): \(wait)") }
        }
        await handle.close()
    }
}
