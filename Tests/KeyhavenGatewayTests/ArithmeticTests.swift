import Foundation
import KeyhavenCore
import KeyhavenGateway
import KeyhavenTestSupport
import Testing

/// Money, token and count arithmetic over the whole range of the numbers users, providers and rows supply: every
/// result equals the exact 128-bit answer clamped to `Int64`, and nothing traps (a trap would end the test run).
@Suite("Arithmetic on outside numbers")
struct ArithmeticTests {
    /// The edges of the range, the bounds validation enforces, and random values of every magnitude.
    static func values(_ random: inout SplitMix64, count: Int = 40) -> [Int64] {
        var values: [Int64] = [
            0, 1, 2, -1, .max, .max - 1, .min, .min + 1, 999_999, 1_000_000, 500_000, 499_999,
            UsageBounds.tokens, UsageBounds.tokens + 1, UsageBounds.eventCostMicros, 9_223_372, 36_854_775_807,
            Int64.max / 100, Int64.max / 100 + 1, Int64.max / 1_000_000,
        ]
        for _ in 0..<count {
            let bits = Int64.random(in: 0...63, using: &random)
            let magnitude = Int64.random(in: 0...(Int64.max >> (63 - bits)), using: &random)
            values.append(Bool.random(using: &random) ? magnitude : -magnitude)
        }
        return values
    }

    static func clamp(_ value: Int128) -> Int64 {
        value > Int128(Int64.max) ? .max : value < Int128(Int64.min) ? .min : Int64(value)
    }

    static let seed = UInt64(Date().timeIntervalSince1970 * 1000)

    @Test("sums, differences, products and percentages equal the exact answer clamped to the range")
    func saturating() {
        var random = SplitMix64(seed: Self.seed)
        let values = Self.values(&random)
        var checked = 0
        for a in values {
            for b in values {
                #expect(Saturating.add(a, b) == Self.clamp(Int128(a) + Int128(b)), "seed \(Self.seed): \(a) + \(b)")
                #expect(
                    Saturating.subtract(a, b) == Self.clamp(Int128(a) - Int128(b)), "seed \(Self.seed): \(a) - \(b)")
                #expect(
                    Saturating.multiply(a, b) == Self.clamp(Int128(a) * Int128(b)), "seed \(Self.seed): \(a) × \(b)")
                let percent = b > 0 ? Self.clamp(Int128(a) * 100 / Int128(b)) : 100
                #expect(Saturating.percent(a, of: b) == percent, "seed \(Self.seed): \(a) of \(b)")
                #expect(
                    Saturating.reaches(a, percent: 80, of: b) == (Int128(a) * 100 >= Int128(b) * 80),
                    "seed \(Self.seed): \(a) reaches 80 % of \(b)")
                checked += 1
            }
        }
        #expect(
            Saturating.sum(values)
                == Self.clamp(
                    values.reduce(Int128(0)) { max(Int128(Int64.min), min(Int128(Int64.max), $0 + Int128($1))) }))
        print("saturating arithmetic: \(checked) pairs, seed \(Self.seed)")
    }

    /// The cost as the definition states it: every part's tokens times its price, summed exactly, rounded half up
    /// to micro-dollars, clamped to the range.
    static func exactCost(_ price: ModelPrice, _ usage: TokenUsage) -> Int64 {
        func nonNegative(_ value: Int128) -> Int128 { max(0, value) }
        let cached = nonNegative(Int128(usage.cachedInputTokens))
        let written = nonNegative(Int128(usage.cacheWriteTokens))
        let plainInput = nonNegative(Int128(usage.inputTokens) - cached - written)
        let reasoning = nonNegative(Int128(usage.reasoningTokens))
        let plainOutput = nonNegative(Int128(usage.outputTokens) - reasoning)
        let parts: [(Int128, Int64)] = [
            (plainInput, price.input), (cached, price.cachedInput ?? price.input),
            (written, price.cacheWrite ?? price.input), (plainOutput, price.output),
            (reasoning, price.reasoning ?? price.output),
        ]
        var pico: Int128 = 0
        for (tokens, each) in parts {
            let (product, overflow) = tokens.multipliedReportingOverflow(by: Int128(max(0, each)))
            let (sum, overflowSum) = pico.addingReportingOverflow(product)
            if overflow || overflowSum { return .max }
            pico = sum
        }
        let (rounded, overflow) = pico.addingReportingOverflow(500_000)
        return overflow ? .max : clamp(rounded / 1_000_000)
    }

    @Test("a model's cost is exact for every token count and price, extremes included, and never traps")
    func cost() {
        var random = SplitMix64(seed: Self.seed &+ 1)
        let values = Self.values(&random, count: 12)
        var checked = 0
        for tokens in values {
            for price in values {
                let model = ModelPrice(input: price, output: 1, cachedInput: price, cacheWrite: nil, reasoning: price)
                let usages = [
                    TokenUsage(inputTokens: tokens, outputTokens: tokens),
                    TokenUsage(
                        inputTokens: tokens, cachedInputTokens: tokens / 2, cacheWriteTokens: tokens / 3,
                        outputTokens: .max - max(0, tokens), reasoningTokens: tokens),
                    TokenUsage(
                        inputTokens: .min, cachedInputTokens: tokens, outputTokens: tokens, reasoningTokens: .min),
                ]
                for usage in usages {
                    #expect(
                        model.cost(of: usage) == Self.exactCost(model, usage),
                        "seed \(Self.seed): \(usage) at \(model)")
                    checked += 1
                }
            }
        }
        // The report that stopped the process: $1,000,000 and $0.000001 per million tokens, tokens summing to
        // exactly Int64.max pico-dollars.
        let extreme = ModelPrice(input: 1_000_000_000_000, output: 1)
        let usage = TokenUsage(inputTokens: 9_223_372, outputTokens: 36_854_775_807)
        #expect(extreme.cost(of: usage) == Self.exactCost(extreme, usage))
        #expect(extreme.cost(of: usage) > UsageBounds.eventCostMicros)
        print("model costs: \(checked) cases, seed \(Self.seed)")
    }

    @Test("budget percentages and warnings are exact for every spending and budget")
    func budgets() {
        var random = SplitMix64(seed: Self.seed &+ 2)
        let values = Self.values(&random, count: 20)
        for spent in values {
            for budget in values {
                let standing = Budgets.Standing(
                    limits: UsageLimits(monthlyBudgetMicros: budget), spentMicros: spent)
                let exact = budget > 0 ? Self.clamp(Int128(spent) * 100 / Int128(budget)) : 100
                #expect(standing.percent == exact, "seed \(Self.seed): \(spent) of \(budget)")
                #expect(standing.warning == (exact >= UsageLimits.warningPercent))
            }
        }
    }

    @Test("totals of usage rows saturate instead of trapping, field by field")
    func totals() {
        var random = SplitMix64(seed: Self.seed &+ 3)
        let values = Self.values(&random, count: 20).filter { $0 >= 0 }
        let rows = values.map { value in
            UsageTotals(
                key: "", requests: value,
                tokens: TokenUsage(
                    inputTokens: value, cachedInputTokens: value, cacheWriteTokens: value, outputTokens: value,
                    reasoningTokens: value),
                costMicros: value, unpricedRequests: value)
        }
        let total = rows.total
        let exact = Self.clamp(values.reduce(Int128(0)) { $0 + Int128($1) })
        #expect(total.requests == exact && total.costMicros == exact && total.unpricedRequests == exact)
        #expect(total.tokens.inputTokens == exact && total.tokens.reasoningTokens == exact)
        #expect(total.tokens.totalTokens == Self.clamp(Int128(exact) * 2))
    }
}
