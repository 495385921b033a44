extension Migration {
    /// The background verifier's lease on an integration, and what the last check found (SPEC §7).
    static let addVerificationState = Migration(version: 3, name: "AddVerificationState") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            "ALTER TABLE integrations ADD COLUMN verify_claimed_until \(t.timestamp)",
            "ALTER TABLE integrations ADD COLUMN verification_details TEXT",
            "CREATE INDEX integrations_verifying ON integrations (status, verify_claimed_until)",
        ]
    }
}
