import Foundation
import KeyhavenCore
import KeyhavenServices

// The wire types of usage reports and analytics (SPEC §13).

/// `POST /api/integrations/{id}/usage`: `{model, input_tokens, output_tokens, cached_input_tokens?,
/// cache_write_tokens?, reasoning_tokens?, requests?, occurred_at?, idempotency_key}`.
struct ReportUsageRequest: RequestBody {
    static let knownFields: Set<String>? = [
        "model", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
        "requests", "occurred_at", "idempotency_key",
    ]

    var model: Input<String>?
    var inputTokens: Input<Double>?
    var outputTokens: Input<Double>?
    var cachedInputTokens: Input<Double>?
    var cacheWriteTokens: Input<Double>?
    var reasoningTokens: Input<Double>?
    var requests: Input<Double>?
    var occurredAt: Input<String>?
    var idempotencyKey: Input<String>?

    enum CodingKeys: String, CodingKey {
        case model
        case inputTokens = "input_tokens"
        case outputTokens = "output_tokens"
        case cachedInputTokens = "cached_input_tokens"
        case cacheWriteTokens = "cache_write_tokens"
        case reasoningTokens = "reasoning_tokens"
        case requests
        case occurredAt = "occurred_at"
        case idempotencyKey = "idempotency_key"
    }

    /// The most tokens one report may carry in any field.
    static let maximumTokens: Double = 1e12
    /// How far back a report may date its usage.
    static let oldest: TimeInterval = 90 * 86_400

    /// What a report that cannot be recorded is refused with: its fields' problems (422), or a contradiction
    /// between them (409).
    enum Refusal: Error {
        case fields(FieldErrors)
        case conflict(String)
    }

    func validated(_ errors: FieldErrors, now: Date = Date()) throws -> UsageReport {
        switch check(errors, now: now) {
        case .success(let valid): return valid
        case .failure(.fields(let problems)): throw problems.error
        case .failure(.conflict(let reason)): throw KeyhavenError.conflict(reason)
        }
    }

    private func check(_ errors: FieldErrors, now: Date) -> Result<UsageReport, Refusal> {
        var errors = errors
        var model = TextRule.text(
            model, "model", required: true, maximumLength: ModelName.maximumBytes, errors: &errors)
        // The rule every stored model name follows, the gateway's too: its length is counted in bytes.
        if let name = model, !ModelName.isValid(name) {
            errors["model"] = "must be at most \(ModelName.maximumBytes) bytes of UTF-8, without control characters"
            model = nil
        }
        func count(_ input: Input<Double>?, _ name: String, required: Bool = false, least: Double = 0) -> Int64? {
            guard let input else {
                if required { errors[name] = "is required" }
                return nil
            }
            guard let value = input.value, value.rounded() == value, value >= least, value <= Self.maximumTokens else {
                errors[name] = "must be a whole number from \(Int(least)) to 1000000000000"
                return nil
            }
            return Int64(value)
        }
        let input = count(inputTokens, "input_tokens", required: true) ?? 0
        let output = count(outputTokens, "output_tokens", required: true) ?? 0
        let cached = count(cachedInputTokens, "cached_input_tokens") ?? 0
        let written = count(cacheWriteTokens, "cache_write_tokens") ?? 0
        let reasoning = count(reasoningTokens, "reasoning_tokens") ?? 0
        let requestCount = count(requests, "requests", least: 1) ?? 1
        var occurred = now
        if let occurredAt {
            if let text = occurredAt.value, let date = Date(wireTimestamp: text) {
                occurred = date
            } else {
                errors["occurred_at"] = "must be an ISO 8601 time"
            }
        }
        var key: String?
        if let text = idempotencyKey?.value, (1...200).contains(text.utf8.count),
            text.utf8.allSatisfy({ (0x21...0x7E).contains($0) })
        {
            key = text
        } else {
            errors["idempotency_key"] = "must be 1 to 200 visible ASCII characters"
        }
        guard errors.problems.isEmpty, let model, let key else { return .failure(.fields(errors)) }
        // Rules between fields, which a schema cannot state: the report contradicts itself or its time.
        if cached + written > input {
            return .failure(
                .conflict(
                    "cached_input_tokens and cache_write_tokens are parts "
                        + "of input_tokens: together they cannot exceed it."
                ))
        }
        if reasoning > output {
            return .failure(.conflict("reasoning_tokens are a part of output_tokens: they cannot exceed it."))
        }
        guard occurred <= now.addingTimeInterval(300), occurred >= now.addingTimeInterval(-Self.oldest) else {
            return .failure(.conflict("occurred_at must be within the last 90 days."))
        }
        return .success(
            UsageReport(
                model: model,
                tokens: TokenUsage(
                    inputTokens: input, cachedInputTokens: cached, cacheWriteTokens: written, outputTokens: output,
                    reasoningTokens: reasoning),
                requests: requestCount, occurredAt: occurred, idempotencyKey: key))
    }
}

extension Date {
    /// An ISO 8601 time with or without fractional seconds, with a zone.
    init?(wireTimestamp text: String) {
        guard text.utf8.count <= 40 else { return nil }
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let plain = ISO8601DateFormatter()
        guard let date = fractional.date(from: text) ?? plain.date(from: text) else { return nil }
        self = date
    }
}

/// Micro-dollars as dollars on the wire (a decimal number with six places at most).
func wireDollars(_ micros: Int64?) -> JSONValue {
    micros.map { .number(Double($0) / 1_000_000) } ?? .null
}

/// The token fields shared by events and totals.
func wireTokens(_ tokens: TokenUsage) -> [String: JSONValue] {
    [
        "input_tokens": .number(Double(tokens.inputTokens)),
        "cached_input_tokens": .number(Double(tokens.cachedInputTokens)),
        "cache_write_tokens": .number(Double(tokens.cacheWriteTokens)),
        "output_tokens": .number(Double(tokens.outputTokens)),
        "reasoning_tokens": .number(Double(tokens.reasoningTokens)),
    ]
}

/// One usage event.
struct UsageEventResponse: ResponseBody {
    let event: UsageEvent

    var json: JSONValue {
        var fields = wireTokens(event.tokens)
        fields["id"] = wireID(event.id)
        fields["integration_id"] = wireID(event.integrationID)
        fields["workspace_id"] = wireID(event.ownerID)
        fields["model"] = .string(event.model ?? "")
        fields["source"] = .string(event.source.rawValue)
        fields["requests"] = .number(Double(event.requests))
        fields["cost_micros"] = event.costMicros.map { .number(Double($0)) } ?? .null
        fields["cost_usd"] = wireDollars(event.costMicros)
        fields["idempotency_key"] = event.idempotencyKey.map(JSONValue.string) ?? .null
        fields["occurred_at"] = wireDate(event.occurredAt)
        fields["estimated"] = .bool(event.estimated)
        return .object(fields)
    }
}

/// `GET /api/usage`: the rows of one grouping and their total.
package struct UsageSummaryResponse: ResponseBody {
    let query: UsageQuery
    let rows: [UsageTotals]

    static func row(_ totals: UsageTotals, key: String) -> [String: JSONValue] {
        var fields = wireTokens(totals.tokens)
        fields[key] = .string(totals.key)
        fields["requests"] = .number(Double(totals.requests))
        fields["cost_micros"] = .number(Double(totals.costMicros))
        fields["cost_usd"] = wireDollars(totals.costMicros)
        fields["unpriced_requests"] = .number(Double(totals.unpricedRequests))
        return fields
    }

    var total: UsageTotals { rows.total }

    var json: JSONValue {
        let key = query.grouping == .integration ? "integration_id" : query.grouping.rawValue
        var totalFields = Self.row(total, key: "key")
        totalFields.removeValue(forKey: "key")
        return .object([
            "workspace_id": wireID(query.ownerID),
            "integration_id": query.integrationID.map(wireID) ?? .null,
            "from": .string(query.from), "to": .string(query.to), "group_by": .string(query.grouping.rawValue),
            "rows": .array(rows.map { .object(Self.row($0, key: key)) }),
            "total": .object(totalFields),
        ])
    }

    /// The same rows as CSV (RFC 4180), one line per row, cost in dollars.
    var csv: String {
        let key = query.grouping == .integration ? "integration_id" : query.grouping.rawValue
        var lines = [
            "\(key),requests,input_tokens,cached_input_tokens,cache_write_tokens,"
                + "output_tokens,reasoning_tokens,cost_usd,unpriced_requests"
        ]
        for row in rows {
            let t = row.tokens
            let fields = [
                Self.csvField(row.key), String(row.requests), String(t.inputTokens), String(t.cachedInputTokens),
                String(t.cacheWriteTokens), String(t.outputTokens), String(t.reasoningTokens),
                Self.dollars(row.costMicros), String(row.unpricedRequests),
            ]
            lines.append(fields.joined(separator: ","))
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }

    /// `1.234567` for 1,234,567 micro-dollars, exactly.
    package static func dollars(_ micros: Int64) -> String {
        let sign = micros < 0 ? "-" : ""
        let magnitude = micros.magnitude
        let fraction = String(magnitude % 1_000_000)
        return "\(sign)\(magnitude / 1_000_000).\(String(repeating: "0", count: 6 - fraction.count))\(fraction)"
    }

    /// A field quoted when it holds a comma, quote or line break; a leading `=`, `+`, `-` or `@` is prefixed
    /// with `'` so a spreadsheet does not run it as a formula.
    static func csvField(_ text: String) -> String {
        var text = text
        if let first = text.first, "=+-@".contains(first) { text = "'" + text }
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0.isNewline }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
