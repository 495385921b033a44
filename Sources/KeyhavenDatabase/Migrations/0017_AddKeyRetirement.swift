extension Migration {
    /// Provider credentials Keyhaven made or meant to delete that it can no longer retire itself: a rotation's
    /// integration deleted while a new credential was made but not yet current, or while the old one waited for its
    /// grace period to end. The operator lists them (`keyhaven rotations unretired`) and deletes them at the
    /// provider. And, on the integration, why the old credential of a rotation could not be deleted (yet).
    static let addKeyRetirement = Migration(version: 17, name: "AddKeyRetirement") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            "ALTER TABLE integrations ADD COLUMN retire_error TEXT",
            """
            CREATE TABLE unretired_keys (
                id \(t.uuid) PRIMARY KEY,
                workspace_id \(t.uuid) NOT NULL,
                integration_id \(t.uuid) NOT NULL,
                integration_name TEXT NOT NULL,
                integration_type TEXT NOT NULL,
                rotation_id \(t.uuid) NOT NULL,
                key_id TEXT,
                reason TEXT NOT NULL,
                created_at \(t.timestamp) NOT NULL
            )
            """,
        ]
    }
}
