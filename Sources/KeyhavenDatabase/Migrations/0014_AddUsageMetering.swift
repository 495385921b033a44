extension Migration {
    /// Metering (SPEC §13): whether a usage event's tokens are Keyhaven's estimate (an answer that ended without the
    /// provider's usage), and whether an owner lets the gateway forward endpoints it cannot meter despite a budget or
    /// token limit. Both default to false, which is what every earlier row was.
    static let addUsageMetering = Migration(version: 14, name: "AddUsageMetering") { kind in
        let t = Database.ColumnTypes(kind)
        let no = kind == .postgres ? "FALSE" : "0"
        return [
            "ALTER TABLE usage_events ADD COLUMN estimated \(t.bool) NOT NULL DEFAULT \(no)",
            "ALTER TABLE usage_limits ADD COLUMN allow_unmetered \(t.bool) NOT NULL DEFAULT \(no)",
        ]
    }
}
