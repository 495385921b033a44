extension Migration {
    /// The lease of scheduled backups (SPEC §14): when the next one is due and which instance took the last, so
    /// that of many instances sharing a database only one takes each backup.
    static let addBackupSchedule = Migration(version: 7, name: "AddBackupSchedule") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            """
            CREATE TABLE backup_schedule (
                name TEXT PRIMARY KEY,
                due_at \(t.timestamp) NOT NULL,
                holder TEXT NOT NULL
            )
            """
        ]
    }
}
