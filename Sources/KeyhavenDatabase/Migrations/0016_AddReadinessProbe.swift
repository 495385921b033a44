extension Migration {
    /// One row that `/readyz` writes, so readiness means the database accepts a write (a full disk or a read-only
    /// file fails it), not only that it answers a query.
    static let addReadinessProbe = Migration(version: 16, name: "AddReadinessProbe") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            "CREATE TABLE readiness_probe (id INTEGER PRIMARY KEY, written_at \(t.timestamp))",
            "INSERT INTO readiness_probe (id) VALUES (1)",
        ]
    }
}
