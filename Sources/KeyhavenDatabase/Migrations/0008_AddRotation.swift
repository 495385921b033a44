extension Migration {
    /// Credential rotation (SPEC §15): each integration's policy, when its current credentials were stored, the
    /// latest version (which may be a new credential not yet current), and the persisted steps of each rotation.
    package static let addRotation = Migration(version: 8, name: "AddRotation") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            "ALTER TABLE integrations ADD COLUMN latest_version INTEGER NOT NULL DEFAULT 0",
            "UPDATE integrations SET latest_version = current_version",
            "ALTER TABLE integrations ADD COLUMN rotation TEXT",
            "ALTER TABLE integrations ADD COLUMN rotation_reminded_version INTEGER",
            "ALTER TABLE integrations ADD COLUMN credentials_changed_at \(t.timestamp)",
            """
            UPDATE integrations SET credentials_changed_at = (SELECT s.created_at FROM secrets s
            WHERE s.integration_id = integrations.id AND s.version = integrations.current_version)
            """,
            """
            CREATE TABLE rotations (
                id \(t.uuid) PRIMARY KEY,
                integration_id \(t.uuid) NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
                owner_id \(t.uuid) NOT NULL,
                state TEXT NOT NULL,
                old_version INTEGER NOT NULL,
                new_version INTEGER,
                old_key_id TEXT,
                new_key_id TEXT,
                error TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_at \(t.timestamp) NOT NULL,
                claimed_until \(t.timestamp),
                created_at \(t.timestamp) NOT NULL,
                updated_at \(t.timestamp) NOT NULL
            )
            """,
            // At most one unfinished rotation per integration, whichever instance starts it.
            "CREATE UNIQUE INDEX rotations_open ON rotations (integration_id) WHERE state NOT IN ('done', 'failed')",
            "CREATE INDEX rotations_next ON rotations (state, next_at)",
        ]
    }
}
