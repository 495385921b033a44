import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit
import Synchronization

/// Limits in `usage_limits`; counters in `usage_counters` on PostgreSQL, where instances share them, and in memory
/// on SQLite, where one process is the only instance (a write per gateway request would queue behind the writer
/// for nothing).
public struct SQLLimitStore: LimitStore {
    let database: Database
    let audit: SQLAuditLog
    let usage: SQLUsageStore
    private let local = LocalCounters()

    /// Creates the store.
    public init(database: Database, audit: SQLAuditLog, usage: SQLUsageStore) {
        self.database = database
        self.audit = audit
        self.usage = usage
    }

    public func limits(for subjects: [UUID]) async throws -> [UUID: UsageLimits] {
        guard !subjects.isEmpty else { return [:] }
        return try await database.withConnection(short: true) { sql in
            var found: [UUID: UsageLimits] = [:]
            for row in try await sql.raw("SELECT * FROM usage_limits WHERE id IN (\(binds: subjects))").all() {
                found[try row.decode(column: "id", as: UUID.self)] = UsageLimits(
                    monthlyBudgetMicros: try row.decode(column: "monthly_budget_micros", as: Int64?.self),
                    requestsPerMinute: try row.decode(column: "requests_per_minute", as: Int64?.self),
                    tokensPerMinute: try row.decode(column: "tokens_per_minute", as: Int64?.self),
                    allowsUnmeteredEndpoints: try row.decode(column: "allow_unmetered", as: Bool.self))
            }
            return found
        }
    }

    public func setLimits(_ limits: UsageLimits, subject: UUID, ownerID: UUID, actor: AuditActor) async throws {
        try await database.transaction { sql in
            if limits.isEmpty {
                try await sql.raw("DELETE FROM usage_limits WHERE id = \(bind: subject)").run()
            } else {
                try await sql.raw(
                    """
                    INSERT INTO usage_limits (id, owner_id, monthly_budget_micros, requests_per_minute,
                    tokens_per_minute, allow_unmetered, updated_at) VALUES (\(bind: subject), \(bind: ownerID),
                    \(bind: limits.monthlyBudgetMicros), \(bind: limits.requestsPerMinute),
                    \(bind: limits.tokensPerMinute), \(bind: limits.allowsUnmeteredEndpoints), \(bind: Date()))
                    ON CONFLICT (id) DO UPDATE SET monthly_budget_micros = excluded.monthly_budget_micros,
                    requests_per_minute = excluded.requests_per_minute, tokens_per_minute = excluded.tokens_per_minute,
                    allow_unmetered = excluded.allow_unmetered, updated_at = excluded.updated_at
                    """
                ).run()
            }
            func number(_ value: Int64?) -> JSONValue { value.map { .number(Double($0)) } ?? .null }
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .limitsUpdate, ownerID: ownerID,
                    integrationID: subject == ownerID ? nil : subject,
                    detail: [
                        "monthly_budget_micros": number(limits.monthlyBudgetMicros),
                        "requests_per_minute": number(limits.requestsPerMinute),
                        "tokens_per_minute": number(limits.tokensPerMinute),
                        "allow_unmetered_endpoints": .bool(limits.allowsUnmeteredEndpoints),
                    ]),
                on: sql)
        }
    }

    public func spent(ownerID: UUID, integrationID: UUID?, since: Date) async throws -> Int64 {
        try await usage.spent(ownerID: ownerID, integrationID: integrationID, since: since)
    }

    public func count(subject: UUID, window: Int64, requests: Int64, tokens: Int64) async throws
        -> (requests: Int64, tokens: Int64)
    {
        guard database.kind == .postgres else {
            return local.add(subject: subject, window: window, requests: requests, tokens: tokens)
        }
        return try await database.withConnection(short: true) { sql in
            let row = try await sql.raw(
                """
                INSERT INTO usage_counters (subject_id, window_start, requests, tokens)
                VALUES (\(bind: subject), \(bind: window), \(bind: requests), \(bind: tokens))
                ON CONFLICT (subject_id, window_start) DO UPDATE SET
                requests = \(unsafeRaw: Database.saturatingAdd("usage_counters.requests", "excluded.requests")),
                tokens = \(unsafeRaw: Database.saturatingAdd("usage_counters.tokens", "excluded.tokens"))
                RETURNING requests, tokens
                """
            ).first()
            // Windows older than a few minutes are never read again.
            if Int.random(in: 0..<200) == 0 {
                try await sql.raw("DELETE FROM usage_counters WHERE window_start < \(bind: window - 600)").run()
            }
            return (
                try row?.decode(column: "requests", as: Int64.self) ?? requests,
                try row?.decode(column: "tokens", as: Int64.self) ?? tokens
            )
        }
    }

    public func warnOnce(subject: UUID, ownerID: UUID, integrationID: UUID?, month: String, spent: Int64, budget: Int64)
        async throws -> Bool
    {
        try await database.transaction { sql in
            let updated = try await sql.raw(
                """
                UPDATE usage_limits SET warned_month = \(bind: month)
                WHERE id = \(bind: subject) AND (warned_month IS NULL OR warned_month <> \(bind: month)) RETURNING id
                """
            ).all()
            guard !updated.isEmpty else { return false }
            try await audit.append(
                AuditEntry(
                    actor: .system, action: .budgetWarning, ownerID: ownerID, integrationID: integrationID,
                    detail: [
                        "month": .string(month), "spent_micros": .number(Double(spent)),
                        "budget_micros": .number(Double(budget)),
                    ]),
                on: sql)
            return true
        }
    }
}

/// Per-minute counters of one process, for SQLite deployments; windows older than ten minutes are dropped.
final class LocalCounters: Sendable {
    private let counters = Mutex<[UUID: (window: Int64, requests: Int64, tokens: Int64)]>([:])

    func add(subject: UUID, window: Int64, requests: Int64, tokens: Int64) -> (requests: Int64, tokens: Int64) {
        counters.withLock { counters in
            var current = counters[subject] ?? (window, 0, 0)
            if current.window != window { current = (window, 0, 0) }
            current.requests = Saturating.add(current.requests, requests)
            current.tokens = Saturating.add(current.tokens, tokens)
            counters[subject] = current
            if counters.count > 100_000 { counters = counters.filter { $0.value.window >= window - 600 } }
            return (current.requests, current.tokens)
        }
    }
}
