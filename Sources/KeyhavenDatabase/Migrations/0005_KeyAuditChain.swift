extension Migration {
    /// The keyed audit chain (SPEC §8): the audit key, wrapped by a master key; the key each event is chained
    /// with (events before this migration keep the unkeyed SHA-256 chain); and signed checkpoints of the chain's
    /// head, which reveal a deleted tail.
    static let keyAuditChain = Migration(version: 5, name: "KeyAuditChain") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            """
            CREATE TABLE audit_keys (
                id TEXT PRIMARY KEY,
                kek_id TEXT NOT NULL REFERENCES keyring_keys (id),
                wrapped_key \(t.bytes) NOT NULL,
                created_at \(t.timestamp) NOT NULL
            )
            """,
            "ALTER TABLE audit_events ADD COLUMN key_id TEXT",
            """
            CREATE TABLE audit_checkpoints (
                seq \(t.bigint) PRIMARY KEY,
                head_hash TEXT NOT NULL,
                key_id TEXT NOT NULL,
                at TEXT NOT NULL,
                signature TEXT NOT NULL
            )
            """,
        ]
    }
}
