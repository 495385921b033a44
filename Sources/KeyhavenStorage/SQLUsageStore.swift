import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

/// Usage events and their daily roll-ups (SPEC §13) in `usage_events` and `usage_daily`. Events are only ever
/// inserted; each insert adds to its roll-up in the same transaction, so the two never disagree.
public struct SQLUsageStore: UsageStore {
    let database: Database
    /// Where reports are audited, in their own transaction.
    let audit: SQLAuditLog

    /// The row counts of the statements that insert events and roll-ups, largest first: a batch is split into
    /// statements of these sizes (``statementRanges(_:)``), so their text takes only these few shapes and each is
    /// prepared once per connection instead of once per batch length. At most 256 rows of 19 values, well under
    /// both databases' bind limits.
    static let statementRows = [256, 64, 16, 4, 1]

    /// `0..<count` as consecutive ranges whose lengths are in ``statementRows``, as few as the sizes allow.
    static func statementRanges(_ count: Int) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start = 0
        for size in statementRows {
            while count - start >= size {
                ranges.append(start..<start + size)
                start += size
            }
        }
        return ranges
    }

    /// The columns of `usage_daily` that add up.
    static let counts = [
        "requests", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
        "cost_micros", "unpriced_requests",
    ]

    /// Creates the store.
    public init(database: Database, audit: SQLAuditLog) {
        self.database = database
        self.audit = audit
    }

    public func append(_ events: [UsageEvent]) async throws {
        guard !events.isEmpty else { return }
        let now = Date()
        try await database.transaction { sql in
            for range in Self.statementRanges(events.count) {
                try await sql.raw(insert(events[range], recordedAt: now)).run()
            }
            try await addToRollups(events, on: sql)
        }
    }

    public func ping() async throws {
        try await database.ping()
    }

    public func report(_ event: UsageEvent, audit entry: AuditEntry) async throws -> (UsageEvent, created: Bool) {
        guard let key = event.idempotencyKey else { throw KeyhavenError.badRequest("An idempotency key is required.") }
        return try await database.transaction { sql in
            var statement = insert([event][...], recordedAt: Date())
            statement.appendInterpolation(
                unsafeRaw: " ON CONFLICT (integration_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
            )
            try await sql.raw(statement).run()
            guard
                let row = try await sql.raw(
                    """
                    SELECT * FROM usage_events
                    WHERE integration_id = \(bind: event.integrationID) AND idempotency_key = \(bind: key)
                    """
                ).first()
            else { throw KeyhavenError.internalError }
            let stored = try Self.event(row)
            let created = stored.id == event.id
            if created {
                try await addToRollups([stored], on: sql)
                try await audit.append(entry, on: sql)
            }
            return (stored, created)
        }
    }

    public func summary(_ query: UsageQuery) async throws -> [UsageTotals] {
        let key =
            switch query.grouping {
            case .day: "day"
            case .model: "model"
            case .integration: "integration_id"
            }
        let order = query.grouping == .day ? "day" : "cost_micros DESC, requests DESC, group_key"
        let sums = Self.counts.map { "\(Database.saturatingSum($0, database.kind)) AS \($0)" }.joined(separator: ", ")
        var statement = SQLQueryString(
            """
            SELECT \(unsafeRaw: key) AS group_key, \(unsafeRaw: sums)
            FROM usage_daily WHERE owner_id = \(bind: query.ownerID)
            AND day >= \(bind: query.from) AND day <= \(bind: query.to)
            """)
        if let integration = query.integrationID {
            statement.appendInterpolation(unsafeRaw: " AND integration_id = ")
            statement.appendInterpolation(bind: integration)
        }
        statement.appendInterpolation(unsafeRaw: " GROUP BY \(key) ORDER BY \(order)")
        return try await database.withConnection { sql in
            try await sql.raw(statement).all().map { row in
                let key: String =
                    query.grouping == .integration
                    ? try row.decode(column: "group_key", as: UUID.self).lowercasedText
                    : try row.decode(column: "group_key", as: String.self)
                return UsageTotals(
                    key: key, requests: try row.decode(column: "requests", as: Int64.self),
                    tokens: try Self.tokens(row),
                    costMicros: try row.decode(column: "cost_micros", as: Int64.self),
                    unpricedRequests: try row.decode(column: "unpriced_requests", as: Int64.self))
            }
        }
    }

    /// Spending of a workspace (or one of its integrations) since `start`, in micro-dollars, from the roll-ups.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    public func spent(ownerID: UUID, integrationID: UUID?, since start: Date) async throws -> Int64 {
        var statement = SQLQueryString(
            """
            SELECT COALESCE(\(unsafeRaw: Database.saturatingSum("cost_micros", database.kind)), 0) AS spent
            FROM usage_daily
            WHERE owner_id = \(bind: ownerID) AND day >= \(bind: start.utcDay)
            """)
        if let integrationID {
            statement.appendInterpolation(unsafeRaw: " AND integration_id = ")
            statement.appendInterpolation(bind: integrationID)
        }
        return try await database.withConnection { sql in
            try await sql.raw(statement).first()?.decode(column: "spent", as: Int64.self) ?? 0
        }
    }

    /// Deletes a workspace's usage (the organization is being deleted), inside its transaction.
    static func deleteAll(ownerID: UUID, on sql: any SQLDatabase) async throws {
        try await sql.raw("DELETE FROM usage_daily WHERE owner_id = \(bind: ownerID)").run()
        try await sql.raw("DELETE FROM usage_events WHERE owner_id = \(bind: ownerID)").run()
    }

    private func insert(_ events: ArraySlice<UsageEvent>, recordedAt: Date) -> SQLQueryString {
        var statement = SQLQueryString(
            """
            INSERT INTO usage_events (id, owner_id, integration_id, type, model, source, status, requests, input_tokens,
            cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_micros, token_id,
            idempotency_key, occurred_at, recorded_at, estimated) VALUES
            """)
        for (index, event) in events.enumerated() {
            statement.appendInterpolation(unsafeRaw: index == 0 ? " " : ", ")
            statement.appendInterpolation(
                """
                (\(bind: event.id), \(bind: event.ownerID), \(bind: event.integrationID), \(bind: event.type.rawValue),
                \(bind: event.model), \(bind: event.source.rawValue), \(bind: event.status), \(bind: event.requests),
                \(bind: event.tokens.inputTokens), \(bind: event.tokens.cachedInputTokens),
                \(bind: event.tokens.cacheWriteTokens), \(bind: event.tokens.outputTokens),
                \(bind: event.tokens.reasoningTokens), \(bind: event.costMicros), \(bind: event.tokenID),
                \(bind: event.idempotencyKey), \(bind: event.occurredAt), \(bind: recordedAt), \(bind: event.estimated))
                """ as SQLQueryString)
        }
        return statement
    }

    /// Adds events to their days' roll-ups: one row per workspace, integration, day and model.
    private func addToRollups(_ events: [UsageEvent], on sql: any SQLDatabase) async throws {
        struct Key: Hashable {
            var owner: UUID
            var integration: UUID
            var type: IntegrationType
            var day: String
            var model: String
        }
        var totals: [Key: UsageTotals] = [:]
        for event in events {
            let key = Key(
                owner: event.ownerID, integration: event.integrationID, type: event.type, day: event.occurredAt.utcDay,
                model: event.model ?? "")
            totals[key, default: .zero].add(UsageTotals(event))
        }
        let rows = Array(totals)
        for range in Self.statementRanges(rows.count) {
            var statement = SQLQueryString(
                """
                INSERT INTO usage_daily (id, owner_id, integration_id, type, day, model, requests, input_tokens,
                cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_micros,
                unpriced_requests)
                VALUES
                """)
            for (index, (key, sum)) in rows[range].enumerated() {
                statement.appendInterpolation(unsafeRaw: index == 0 ? " " : ", ")
                statement.appendInterpolation(
                    """
                    (\(bind: UUID()), \(bind: key.owner), \(bind: key.integration), \(bind: key.type.rawValue),
                    \(bind: key.day), \(bind: key.model), \(bind: sum.requests), \(bind: sum.tokens.inputTokens),
                    \(bind: sum.tokens.cachedInputTokens), \(bind: sum.tokens.cacheWriteTokens),
                    \(bind: sum.tokens.outputTokens), \(bind: sum.tokens.reasoningTokens), \(bind: sum.costMicros),
                    \(bind: sum.unpricedRequests))
                    """ as SQLQueryString)
            }
            let sums = Self.counts.map { "\($0) = \(Database.saturatingAdd("usage_daily.\($0)", "excluded.\($0)"))" }
            statement.appendInterpolation(
                unsafeRaw: " ON CONFLICT (owner_id, integration_id, day, model) DO UPDATE SET "
                    + sums.joined(separator: ", "))
            try await sql.raw(statement).run()
        }
    }

    static func tokens(_ row: any SQLRow) throws -> TokenUsage {
        TokenUsage(
            inputTokens: try row.decode(column: "input_tokens", as: Int64.self),
            cachedInputTokens: try row.decode(column: "cached_input_tokens", as: Int64.self),
            cacheWriteTokens: try row.decode(column: "cache_write_tokens", as: Int64.self),
            outputTokens: try row.decode(column: "output_tokens", as: Int64.self),
            reasoningTokens: try row.decode(column: "reasoning_tokens", as: Int64.self))
    }

    static func event(_ row: any SQLRow) throws -> UsageEvent {
        guard let type = IntegrationType(stored: try row.decode(column: "type", as: String.self)),
            let source = UsageSource(rawValue: try row.decode(column: "source", as: String.self))
        else { throw KeyhavenError.internalError }
        return UsageEvent(
            id: try row.decode(column: "id", as: UUID.self), ownerID: try row.decode(column: "owner_id", as: UUID.self),
            integrationID: try row.decode(column: "integration_id", as: UUID.self), type: type,
            model: try row.decode(column: "model", as: String?.self), source: source,
            status: try row.decode(column: "status", as: Int?.self),
            requests: try row.decode(column: "requests", as: Int64.self), tokens: try tokens(row),
            costMicros: try row.decode(column: "cost_micros", as: Int64?.self),
            tokenID: try row.decode(column: "token_id", as: UUID?.self),
            idempotencyKey: try row.decode(column: "idempotency_key", as: String?.self),
            occurredAt: try row.decode(column: "occurred_at", as: Date.self),
            estimated: try row.decode(column: "estimated", as: Bool.self))
    }
}
