import Testing

@testable import KeyhavenStorage

@Suite("Usage inserts")
struct UsageStatementTests {
    @Test("a batch of any length is written by statements of a few fixed sizes, covering each row once, in order")
    func fixedShapes() {
        for count in [0, 1, 3, 4, 5, 63, 64, 65, 255, 256, 257, 341, 500, 1_999, 2_000] {
            let ranges = SQLUsageStore.statementRanges(count)
            #expect(ranges.allSatisfy { SQLUsageStore.statementRows.contains($0.count) }, "\(count)")
            #expect(ranges.map(\.count).reduce(0, +) == count)
            #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
            #expect(ranges.first?.lowerBound ?? 0 == 0)
            // Below 256 rows, at most three statements of each smaller size.
            #expect(ranges.count <= count / 256 + 12, "\(count): \(ranges.count) statements")
        }
    }
}
