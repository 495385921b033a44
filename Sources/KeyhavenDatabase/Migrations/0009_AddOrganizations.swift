extension Migration {
    /// Workspaces and organizations (SPEC §12). An integration's `owner_id` is now its workspace: a user's id for
    /// their personal workspace (every existing row, unchanged, so every secret's binding still holds) or an
    /// organization's id. The foreign keys from `integrations.owner_id` and `secrets.owner_id` to `users` go, since
    /// an organization is not a user; an organization's integrations are deleted with it, in the same transaction.
    ///
    /// SQLite cannot drop a constraint, so it rebuilds both tables in SQLite's documented order (new table, copy,
    /// drop, rename); the migrator runs with foreign-key enforcement off and checks every key before the commit.
    static let addOrganizations = Migration(version: 9, name: "AddOrganizations") { kind in
        let t = Database.ColumnTypes(kind)
        let dropOwnerReferences: [String]
        switch kind {
        case .postgres:
            dropOwnerReferences = [
                "ALTER TABLE integrations DROP CONSTRAINT integrations_owner_id_fkey",
                "ALTER TABLE secrets DROP CONSTRAINT secrets_owner_id_fkey",
            ]
        case .sqlite:
            let integrationColumns = """
                id, owner_id, name, type, status, enabled, config, credential_hint, current_version, last_used_at,
                last_verified_at, error_message, created_at, updated_at, verify_claimed_until, verification_details,
                verify_attempts, latest_version, rotation, rotation_reminded_version, credentials_changed_at
                """
            let secretColumns =
                "id, integration_id, owner_id, version, kek_id, wrapped_dek, nonce, ciphertext, created_at"
            dropOwnerReferences = [
                """
                CREATE TABLE integrations_rebuilt (
                    id TEXT PRIMARY KEY,
                    owner_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    type TEXT NOT NULL,
                    status TEXT NOT NULL,
                    enabled INTEGER NOT NULL,
                    config TEXT NOT NULL,
                    credential_hint TEXT,
                    current_version INTEGER NOT NULL DEFAULT 0,
                    last_used_at REAL,
                    last_verified_at REAL,
                    error_message TEXT,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL,
                    verify_claimed_until REAL,
                    verification_details TEXT,
                    verify_attempts INTEGER NOT NULL DEFAULT 0,
                    latest_version INTEGER NOT NULL DEFAULT 0,
                    rotation TEXT,
                    rotation_reminded_version INTEGER,
                    credentials_changed_at REAL,
                    UNIQUE (owner_id, name)
                )
                """,
                "INSERT INTO integrations_rebuilt (\(integrationColumns)) "
                    + "SELECT \(integrationColumns) FROM integrations",
                """
                CREATE TABLE secrets_rebuilt (
                    id TEXT PRIMARY KEY,
                    integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
                    owner_id TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    kek_id TEXT NOT NULL REFERENCES keyring_keys (id),
                    wrapped_dek BLOB NOT NULL,
                    nonce BLOB NOT NULL,
                    ciphertext BLOB NOT NULL,
                    created_at REAL NOT NULL,
                    UNIQUE (integration_id, version)
                )
                """,
                "INSERT INTO secrets_rebuilt (\(secretColumns)) SELECT \(secretColumns) FROM secrets",
                "DROP TABLE secrets",
                "DROP TABLE integrations",
                "ALTER TABLE integrations_rebuilt RENAME TO integrations",
                "ALTER TABLE secrets_rebuilt RENAME TO secrets",
                "CREATE INDEX integrations_owner_created ON integrations (owner_id, created_at, id)",
                "CREATE INDEX integrations_verifying ON integrations (status, verify_claimed_until)",
                "CREATE INDEX integrations_owner_id ON integrations (owner_id, id)",
                "CREATE INDEX secrets_kek_id ON secrets (kek_id)",
            ]
        }
        let roles = "CHECK (role IN ('owner', 'admin', 'member', 'viewer'))"
        return dropOwnerReferences + [
            """
            CREATE TABLE organizations (
                id \(t.uuid) PRIMARY KEY,
                name TEXT NOT NULL,
                created_at \(t.timestamp) NOT NULL,
                updated_at \(t.timestamp) NOT NULL
            )
            """,
            """
            CREATE TABLE memberships (
                id \(t.uuid) PRIMARY KEY,
                organization_id \(t.uuid) NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
                user_id \(t.uuid) NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                role TEXT NOT NULL \(roles),
                created_at \(t.timestamp) NOT NULL,
                updated_at \(t.timestamp) NOT NULL,
                UNIQUE (organization_id, user_id)
            )
            """,
            "CREATE INDEX memberships_user ON memberships (user_id)",
            """
            CREATE TABLE invitations (
                id \(t.uuid) PRIMARY KEY,
                organization_id \(t.uuid) NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
                email TEXT NOT NULL,
                role TEXT NOT NULL \(roles),
                token_hash TEXT NOT NULL UNIQUE,
                created_by TEXT,
                created_at \(t.timestamp) NOT NULL,
                expires_at \(t.timestamp) NOT NULL,
                accepted_at \(t.timestamp),
                accepted_by \(t.uuid),
                revoked_at \(t.timestamp)
            )
            """,
            "CREATE INDEX invitations_organization ON invitations (organization_id, created_at)",
            // A service token scoped to one workspace reads only that workspace's credentials.
            "ALTER TABLE api_tokens ADD COLUMN workspace_id \(t.uuid)",
            "CREATE INDEX api_tokens_workspace ON api_tokens (workspace_id)",
        ]
    }
}
