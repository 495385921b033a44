extension Migration {
    /// Budgets and rate limits (SPEC §13): the limits of integrations and workspaces, and per-minute counters that
    /// every instance shares.
    static let addUsageLimits = Migration(version: 11, name: "AddUsageLimits") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            """
            CREATE TABLE usage_limits (
                id \(t.uuid) PRIMARY KEY,
                owner_id \(t.uuid) NOT NULL,
                monthly_budget_micros \(t.bigint),
                requests_per_minute \(t.bigint),
                tokens_per_minute \(t.bigint),
                warned_month TEXT,
                updated_at \(t.timestamp) NOT NULL
            )
            """,
            "CREATE INDEX usage_limits_owner ON usage_limits (owner_id)",
            """
            CREATE TABLE usage_counters (
                subject_id \(t.uuid) NOT NULL,
                window_start \(t.bigint) NOT NULL,
                requests \(t.bigint) NOT NULL,
                tokens \(t.bigint) NOT NULL,
                PRIMARY KEY (subject_id, window_start)
            )
            """,
        ]
    }
}
