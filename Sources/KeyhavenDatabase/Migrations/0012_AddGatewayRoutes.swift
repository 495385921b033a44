extension Migration {
    /// Fallback routes (SPEC §13): a workspace's named lists of integrations, tried in order.
    static let addGatewayRoutes = Migration(version: 12, name: "AddGatewayRoutes") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            """
            CREATE TABLE gateway_routes (
                id \(t.uuid) PRIMARY KEY,
                owner_id \(t.uuid) NOT NULL,
                name TEXT NOT NULL,
                integration_ids TEXT NOT NULL,
                created_at \(t.timestamp) NOT NULL,
                updated_at \(t.timestamp) NOT NULL,
                UNIQUE (owner_id, name)
            )
            """
        ]
    }
}
