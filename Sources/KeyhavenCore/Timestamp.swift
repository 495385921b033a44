import Foundation

extension Date {
    /// The date as ISO 8601 in UTC with milliseconds (`2026-12-04T05:10:12.123Z`): the text
    /// `Date.ISO8601FormatStyle(includingFractionalSeconds: true)` writes, milliseconds truncated the same way, built
    /// directly: responses write several per row and the audit trail one per event.
    public var timestampText: String {
        // Like Foundation, from the interval since 2001, whole seconds down and the fraction truncated to ms.
        let sinceReference = timeIntervalSinceReferenceDate
        guard sinceReference.isFinite, abs(sinceReference) < 1e12 else {
            return formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        }
        let whole = sinceReference.rounded(.down)
        let milliseconds = Int(((sinceReference - whole) * 1000).rounded(.down))
        var seconds = time_t(Int64(whole) + Int64(Date.timeIntervalBetween1970AndReferenceDate))
        var parts = tm()
        // Before 1900 Foundation's calendar is not the proleptic Gregorian one `gmtime_r` uses.
        guard gmtime_r(&seconds, &parts) != nil, parts.tm_year >= 0, parts.tm_year + 1900 <= 9999 else {
            return formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(24)
        func digits(_ value: Int, _ count: Int) {
            var divisor = 1
            for _ in 1..<count { divisor *= 10 }
            var value = value
            while divisor > 0 {
                bytes.append(UInt8(ascii: "0") + UInt8(value / divisor))
                value %= divisor
                divisor /= 10
            }
        }
        digits(Int(parts.tm_year) + 1900, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2)
        bytes.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2)
        bytes.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2)
        bytes.append(UInt8(ascii: "."))
        digits(min(milliseconds, 999), 3)
        bytes.append(UInt8(ascii: "Z"))
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension Duration {
    /// The whole milliseconds of a duration, rounded toward zero and saturating at the bounds of `Int64`: a
    /// latency as responses, pages and rows show it.
    public var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return Saturating.add(Saturating.multiply(seconds, 1000), attoseconds / 1_000_000_000_000_000)
    }
}
