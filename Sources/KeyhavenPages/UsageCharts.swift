import Foundation
import KeyhavenCore
import KeyhavenWeb

/// Server-rendered SVG charts of usage (SPEC §13: no script library). Only numbers, dates and interface texts go
/// into them, each escaped; colours come from the stylesheet's classes, so the page needs no inline style.
enum UsageCharts {
    static let width = 640
    static let height = 180
    /// Room for the axis labels.
    static let left = 56
    static let bottom = 24

    /// One day of a chart: its date and one value per series (stacked, first at the bottom).
    struct Day {
        var day: String
        var values: [Int64]
    }

    /// Every day from `from` through `to` (UTC), with the totals of `rows` (grouped by day) where there are any.
    static func days(from: String, to: String, rows: [UsageTotals], values: (UsageTotals) -> [Int64]) -> [Day] {
        var byDay: [String: UsageTotals] = [:]
        for row in rows { byDay[row.key] = row }
        guard var date = UsageDays.date(from), let end = UsageDays.date(to) else { return [] }
        var result: [Day] = []
        while date <= end, result.count <= 366 {
            let key = date.utcDay
            let zero = values(.zero).map { _ in Int64(0) }
            result.append(Day(day: key, values: byDay[key].map(values) ?? zero))
            date = date.addingTimeInterval(86_400)
        }
        return result
    }

    /// A bar chart of `days`, bars stacked by series (`classes` names each series' colour), with a title for
    /// screen readers and the highest value on the axis, written by `format`.
    static func bars(_ days: [Day], title: String, classes: [String], format: (Int64) -> String) -> String {
        let plotWidth = width - left - 8
        let plotHeight = height - bottom - 12
        let maximum = max(1, days.map { Saturating.sum($0.values) }.max() ?? 1)
        let slot = Double(plotWidth) / Double(max(1, days.count))
        let barWidth = max(1.0, slot * 0.7)
        var svg = """
            <svg class="chart" viewBox="0 0 \(width) \(height)" role="img" aria-label="\(escape(title))" \
            xmlns="http://www.w3.org/2000/svg"><title>\(escape(title))</title>
            <line class="chart-axis" x1="\(left)" y1="\(12 + plotHeight)" x2="\(width - 8)" y2="\(12 + plotHeight)"/>
            <line class="chart-grid" x1="\(left)" y1="12" x2="\(width - 8)" y2="12"/>
            <text class="chart-label" x="\(left - 6)" y="16" text-anchor="end">\(escape(format(maximum)))</text>
            <text class="chart-label" x="\(left - 6)" y="\(12 + plotHeight)" text-anchor="end">0</text>

            """
        for (index, day) in days.enumerated() {
            var base = Double(12 + plotHeight)
            let x = Double(left) + slot * Double(index) + (slot - barWidth) / 2
            for (series, value) in day.values.enumerated() where value > 0 {
                let barHeight = Double(plotHeight) * Double(value) / Double(maximum)
                base -= barHeight
                let name = series < classes.count ? classes[series] : "chart-bar"
                svg += "<rect class=\"\(name)\" x=\"\(fixed(x))\" y=\"\(fixed(base))\" width=\"\(fixed(barWidth))\" "
                svg +=
                    "height=\"\(fixed(barHeight))\"><title>\(escape(day.day)): "
                    + "\(escape(format(value)))</title></rect>\n"
            }
        }
        if let first = days.first, let last = days.last {
            svg += "<text class=\"chart-label\" x=\"\(left)\" y=\"\(height - 6)\">\(escape(first.day))</text>\n"
            svg +=
                "<text class=\"chart-label\" x=\"\(width - 8)\" y=\"\(height - 6)\" "
                + "text-anchor=\"end\">\(escape(last.day))</text>\n"
        }
        return svg + "</svg>"
    }

    /// A horizontal gauge of `percent` (capped at 100 for the drawing), warning-coloured from 80 %.
    static func gauge(percent: Int64, title: String) -> String {
        let shown = min(100, max(0, percent))
        let state = percent >= 100 ? "gauge-over" : percent >= UsageLimits.warningPercent ? "gauge-warn" : "gauge-ok"
        return """
            <svg class="gauge" viewBox="0 0 300 16" role="img" aria-label="\(escape(title))" \
            xmlns="http://www.w3.org/2000/svg"><title>\(escape(title))</title>\
            <rect class="gauge-track" x="0" y="0" width="300" height="16" rx="8"/>\
            <rect class="\(state)" x="0" y="0" width="\(shown * 3)" height="16" rx="8"/></svg>
            """
    }

    static func fixed(_ value: Double) -> String { String(format: "%.1f", value) }

    static func escape(_ text: String) -> String {
        var result = ""
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            default: result.append(character)
            }
        }
        return result
    }
}
