/// Arithmetic on numbers that users, providers or database rows supply: token counts, prices, costs, budgets,
/// request counts (STYLE rule 12). Swift's `+`, `-` and `*` trap on overflow in release builds too, so one report
/// with extreme numbers would stop the process; every sum, difference, product and percentage of such numbers goes
/// through here instead, and ends at the edge of `Int64`'s range rather than past it.
///
/// Stored values are validated to be far below these edges (``UsageBounds``); saturation is what keeps a value that
/// got through anyway (a provider's answer, an old row, years of sums) from trapping.
public enum Saturating {
    /// `a + b`, or the nearest end of `Int64`'s range.
    @inlinable
    public static func add(_ a: Int64, _ b: Int64) -> Int64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        guard overflow else { return sum }
        return b > 0 ? .max : .min
    }

    /// `a - b`, or the nearest end of `Int64`'s range.
    @inlinable
    public static func subtract(_ a: Int64, _ b: Int64) -> Int64 {
        let (difference, overflow) = a.subtractingReportingOverflow(b)
        guard overflow else { return difference }
        return b < 0 ? .max : .min
    }

    /// `a × b`, or the nearest end of `Int64`'s range.
    @inlinable
    public static func multiply(_ a: Int64, _ b: Int64) -> Int64 {
        clamp(Int128(a) * Int128(b))
    }

    /// The sum of `values`, or the nearest end of `Int64`'s range.
    public static func sum(_ values: some Sequence<Int64>) -> Int64 {
        values.reduce(0, add)
    }

    /// `value`, or the nearest end of `Int64`'s range.
    @inlinable
    public static func clamp(_ value: Int128) -> Int64 {
        value > Int128(Int64.max) ? .max : value < Int128(Int64.min) ? .min : Int64(value)
    }

    /// `part` as a whole percentage of `whole`, rounded down, computed in 128 bits: exact for every pair. A whole
    /// of zero or less (a budget of nothing) is used up: 100.
    public static func percent(_ part: Int64, of whole: Int64) -> Int64 {
        guard whole > 0 else { return 100 }
        return clamp(Int128(part) * 100 / Int128(whole))
    }

    /// Whether `part` is at least `percent` % of `whole`, computed in 128 bits.
    public static func reaches(_ part: Int64, percent: Int64, of whole: Int64) -> Bool {
        Int128(part) * 100 >= Int128(whole) * Int128(percent)
    }
}

/// The largest numbers Keyhaven accepts where a user or a provider supplies them. Each is far beyond any real use
/// and chosen so that their products and sums stay exact in 128 bits and within `Int64` once divided to a cost.
public enum UsageBounds {
    /// Tokens of one kind in one usage report or answer: a trillion.
    public static let tokens: Int64 = 1_000_000_000_000
    /// Requests one usage report may stand for: a trillion.
    public static let requests: Int64 = 1_000_000_000_000
    /// A workspace's price, in micro-dollars per million tokens (= pico-dollars per token): $1,000,000 per million
    /// tokens.
    public static let priceMicrosPerMillion: Int64 = 1_000_000_000_000
    /// The cost of one usage event: $1,000,000. A report that would cost more is refused; an answer whose usage
    /// prices above it is recorded at it.
    public static let eventCostMicros: Int64 = 1_000_000_000_000
}
