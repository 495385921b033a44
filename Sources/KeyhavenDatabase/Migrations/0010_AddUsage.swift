extension Migration {
    /// Usage and cost (SPEC §13): the append-only events (gateway requests and reports) and their daily roll-ups per
    /// integration and model. No foreign key to `integrations`: the history of a deleted integration still counts
    /// in its workspace's spending.
    static let addUsage = Migration(version: 10, name: "AddUsage") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            """
            CREATE TABLE usage_events (
                id \(t.uuid) PRIMARY KEY,
                owner_id \(t.uuid) NOT NULL,
                integration_id \(t.uuid) NOT NULL,
                type TEXT NOT NULL,
                model TEXT,
                source TEXT NOT NULL CHECK (source IN ('gateway', 'reported')),
                status INTEGER,
                requests \(t.bigint) NOT NULL,
                input_tokens \(t.bigint) NOT NULL,
                cached_input_tokens \(t.bigint) NOT NULL,
                cache_write_tokens \(t.bigint) NOT NULL,
                output_tokens \(t.bigint) NOT NULL,
                reasoning_tokens \(t.bigint) NOT NULL,
                cost_micros \(t.bigint),
                token_id \(t.uuid),
                idempotency_key TEXT,
                occurred_at \(t.timestamp) NOT NULL,
                recorded_at \(t.timestamp) NOT NULL
            )
            """,
            """
            CREATE UNIQUE INDEX usage_events_idempotency ON usage_events (integration_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL
            """,
            "CREATE INDEX usage_events_owner_time ON usage_events (owner_id, occurred_at)",
            """
            CREATE TABLE usage_daily (
                id \(t.uuid) PRIMARY KEY,
                owner_id \(t.uuid) NOT NULL,
                integration_id \(t.uuid) NOT NULL,
                type TEXT NOT NULL,
                day TEXT NOT NULL,
                model TEXT NOT NULL,
                requests \(t.bigint) NOT NULL,
                input_tokens \(t.bigint) NOT NULL,
                cached_input_tokens \(t.bigint) NOT NULL,
                cache_write_tokens \(t.bigint) NOT NULL,
                output_tokens \(t.bigint) NOT NULL,
                reasoning_tokens \(t.bigint) NOT NULL,
                cost_micros \(t.bigint) NOT NULL,
                unpriced_requests \(t.bigint) NOT NULL,
                UNIQUE (owner_id, integration_id, day, model)
            )
            """,
            "CREATE INDEX usage_daily_owner_day ON usage_daily (owner_id, day)",
        ]
    }
}
