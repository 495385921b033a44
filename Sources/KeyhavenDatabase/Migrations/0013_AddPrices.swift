extension Migration {
    /// Prices (SPEC §13): the operator's imported model price table (one row, replacing the bundled one) and each
    /// workspace's negotiated prices.
    static let addPrices = Migration(version: 13, name: "AddPrices") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            """
            CREATE TABLE price_table (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                body TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                models INTEGER NOT NULL,
                imported_at \(t.timestamp) NOT NULL
            )
            """,
            """
            CREATE TABLE price_overrides (
                id \(t.uuid) PRIMARY KEY,
                owner_id \(t.uuid) NOT NULL,
                model TEXT NOT NULL,
                input_micros \(t.bigint) NOT NULL,
                output_micros \(t.bigint) NOT NULL,
                cached_input_micros \(t.bigint),
                updated_at \(t.timestamp) NOT NULL,
                UNIQUE (owner_id, model)
            )
            """,
        ]
    }
}
