extension Migration {
    /// Integration templates (SPEC §16): a workspace's presets for new integrations, and on each integration the
    /// template it was made from.
    static let addTemplates = Migration(version: 18, name: "AddTemplates") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            """
            CREATE TABLE integration_templates (
                id \(t.uuid) PRIMARY KEY,
                owner_id \(t.uuid) NOT NULL,
                name TEXT NOT NULL,
                type TEXT NOT NULL,
                name_pattern TEXT NOT NULL,
                config TEXT NOT NULL,
                rotation TEXT,
                limits TEXT,
                allowed_endpoints TEXT NOT NULL,
                created_at \(t.timestamp) NOT NULL,
                updated_at \(t.timestamp) NOT NULL,
                UNIQUE (owner_id, name)
            )
            """,
            "ALTER TABLE integrations ADD COLUMN template_id \(t.uuid)",
        ]
    }
}
