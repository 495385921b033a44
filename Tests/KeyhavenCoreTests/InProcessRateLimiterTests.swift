import KeyhavenCore
import Testing

@Suite("In-process rate limits")
struct InProcessRateLimiterTests {
    @Test("a window allows its limit per key, then refuses with a wait within the window; a new window starts over")
    func fixedWindows() async throws {
        let limiter = InProcessRateLimiter()
        for _ in 0..<3 { #expect(try await limiter.hit("a", limit: 3, window: .seconds(600)) == .allowed) }
        guard case .limited(let wait) = try await limiter.hit("a", limit: 3, window: .seconds(600)) else {
            Issue.record("the fourth hit must be refused")
            return
        }
        #expect((1...600).contains(wait))
        #expect(try await limiter.hit("b", limit: 3, window: .seconds(600)) == .allowed, "keys count apart")
        try await limiter.reset("a")
        #expect(try await limiter.hit("a", limit: 3, window: .seconds(600)) == .allowed)
        // A short window: once it has passed (the sleep lasts at least that long), counting starts again.
        #expect(try await limiter.hit("c", limit: 1, window: .milliseconds(50)) == .allowed)
        #expect(try await limiter.hit("c", limit: 1, window: .milliseconds(50)) != .allowed)
        try await Task.sleep(for: .milliseconds(60))
        #expect(try await limiter.hit("c", limit: 1, window: .milliseconds(50)) == .allowed)
    }
}
