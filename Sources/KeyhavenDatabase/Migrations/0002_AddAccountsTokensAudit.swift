extension Migration {
    /// Sessions, API tokens, the hash-chained audit trail, and global rate-limit windows (SPEC §3, §5, §8).
    static let addAccountsTokensAudit = Migration(version: 2, name: "AddAccountsTokensAudit") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            """
            CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                user_id \(t.uuid) NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                csrf_token TEXT NOT NULL,
                created_at \(t.timestamp) NOT NULL,
                expires_at \(t.timestamp) NOT NULL,
                last_seen_at \(t.timestamp) NOT NULL
            )
            """,
            "CREATE INDEX sessions_user ON sessions (user_id)",
            """
            CREATE TABLE api_tokens (
                id \(t.uuid) PRIMARY KEY,
                user_id \(t.uuid) REFERENCES users (id) ON DELETE CASCADE,
                kind TEXT NOT NULL,
                name TEXT NOT NULL,
                token_hash TEXT NOT NULL UNIQUE,
                scopes TEXT NOT NULL,
                created_at \(t.timestamp) NOT NULL,
                last_used_at \(t.timestamp),
                expires_at \(t.timestamp),
                revoked_at \(t.timestamp)
            )
            """,
            "CREATE INDEX api_tokens_user ON api_tokens (user_id)",
            // `at` is kept as the exact ISO-8601 text that was hashed, so the chain recomputes byte for byte.
            """
            CREATE TABLE audit_events (
                seq \(t.bigint) PRIMARY KEY,
                id \(t.uuid) NOT NULL UNIQUE,
                at TEXT NOT NULL,
                actor_type TEXT NOT NULL,
                actor_id TEXT,
                owner_id \(t.uuid),
                action TEXT NOT NULL,
                integration_id \(t.uuid),
                outcome TEXT NOT NULL,
                ip TEXT,
                user_agent TEXT,
                detail TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )
            """,
            "CREATE INDEX audit_events_owner ON audit_events (owner_id, seq)",
            "CREATE INDEX audit_events_integration ON audit_events (integration_id, seq)",
            """
            CREATE TABLE rate_limits (
                key TEXT PRIMARY KEY,
                window_start \(t.bigint) NOT NULL,
                count INTEGER NOT NULL
            )
            """,
        ]
    }
}
