extension Migration {
    /// Users, integrations, secret versions, and the keyring state (SPEC §3).
    static let createCoreTables = Migration(version: 1, name: "CreateCoreTables") { kind in
        let t = Database.ColumnTypes(kind)
        return [
            """
            CREATE TABLE users (
                id \(t.uuid) PRIMARY KEY,
                email TEXT,
                password_hash TEXT,
                external_subject TEXT UNIQUE,
                created_at \(t.timestamp) NOT NULL,
                disabled_at \(t.timestamp)
            )
            """,
            "CREATE UNIQUE INDEX users_email_key ON users (lower(email))",
            """
            CREATE TABLE keyring_keys (
                id TEXT PRIMARY KEY,
                canary \(t.bytes) NOT NULL,
                active \(t.bool) NOT NULL,
                wrap_count \(t.bigint) NOT NULL DEFAULT 0,
                created_at \(t.timestamp) NOT NULL,
                activated_at \(t.timestamp)
            )
            """,
            // At most one key is active for new wraps.
            "CREATE UNIQUE INDEX keyring_keys_one_active ON keyring_keys (active) WHERE active",
            """
            CREATE TABLE integrations (
                id \(t.uuid) PRIMARY KEY,
                owner_id \(t.uuid) NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                type TEXT NOT NULL,
                status TEXT NOT NULL,
                enabled \(t.bool) NOT NULL,
                config TEXT NOT NULL,
                credential_hint TEXT,
                current_version INTEGER NOT NULL DEFAULT 0,
                last_used_at \(t.timestamp),
                last_verified_at \(t.timestamp),
                error_message TEXT,
                created_at \(t.timestamp) NOT NULL,
                updated_at \(t.timestamp) NOT NULL,
                UNIQUE (owner_id, name)
            )
            """,
            "CREATE INDEX integrations_owner_created ON integrations (owner_id, created_at, id)",
            """
            CREATE TABLE secrets (
                id \(t.uuid) PRIMARY KEY,
                integration_id \(t.uuid) NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
                owner_id \(t.uuid) NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                version INTEGER NOT NULL,
                kek_id TEXT NOT NULL REFERENCES keyring_keys (id),
                wrapped_dek \(t.bytes) NOT NULL,
                nonce \(t.bytes) NOT NULL,
                ciphertext \(t.bytes) NOT NULL,
                created_at \(t.timestamp) NOT NULL,
                UNIQUE (integration_id, version)
            )
            """,
            "CREATE INDEX secrets_kek_id ON secrets (kek_id)",
        ]
    }
}
