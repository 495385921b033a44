import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The `Date` header of the gateway listener's answers (RFC 9110 §6.6.1, `Mon, 07 Dec 2026 18:22:10 GMT`), as the
/// public port sends it: made once a second, not for every answer.
enum HTTPDate {
    private static let cached = Mutex<(second: Int, text: String)>((-1, ""))

    /// Now, to the second.
    static var now: String {
        let second = time(nil)
        return cached.withLock { cached in
            if cached.second != second { cached = (second, text(second)) }
            return cached.text
        }
    }

    static func text(_ second: time_t) -> String {
        var seconds = second
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday) % 7]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon) % 12]) "
            + "\(Int(parts.tm_year) + 1900) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
