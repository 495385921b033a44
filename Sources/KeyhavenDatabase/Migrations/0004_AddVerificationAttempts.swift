extension Migration {
    /// How many times the background verifier claimed an integration without recording a result, so a check that
    /// keeps failing backs off and is finally given up on (SPEC §7).
    static let addVerificationAttempts = Migration(version: 4, name: "AddVerificationAttempts") { _ in
        ["ALTER TABLE integrations ADD COLUMN verify_attempts INTEGER NOT NULL DEFAULT 0"]
    }
}
