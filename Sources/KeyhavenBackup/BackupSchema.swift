import KeyhavenCrypto

/// The tables a backup holds, parents before children (the order they are written and restored in), each with
/// its columns and their types, as of schema version 14. A migration that adds a table or a column adds it here
/// too; a test compares this list with the migrated schema.
public enum BackupSchema {
    /// One table.
    public struct Table: Sendable {
        /// The table's name.
        public let name: String
        /// The primary-key column the snapshot pages through.
        public let key: String
        /// Every column, the key included.
        public let columns: [BackupColumn]
    }

    /// Tables that are not backed up: the migrations' own bookkeeping (the target's migrator writes it), the
    /// scheduled backups' lease, and the per-minute usage counters (worthless a minute later).
    public static let excluded: Set<String> = [
        "schema_migrations", "backup_schedule", "usage_counters", "readiness_probe",
    ]

    /// Every table that is backed up.
    public static let tables: [Table] = [
        Table(
            name: "users", key: "id",
            columns: [
                .init("id", .uuid), .init("email", .text), .init("password_hash", .text),
                .init("external_subject", .text), .init("created_at", .date), .init("disabled_at", .date),
            ]),
        Table(
            name: "keyring_keys", key: "id",
            columns: [
                .init("id", .text), .init("canary", .bytes), .init("active", .bool), .init("wrap_count", .int),
                .init("created_at", .date), .init("activated_at", .date),
            ]),
        Table(
            name: "organizations", key: "id",
            columns: [
                .init("id", .uuid), .init("name", .text), .init("created_at", .date), .init("updated_at", .date),
            ]),
        Table(
            name: "memberships", key: "id",
            columns: [
                .init("id", .uuid), .init("organization_id", .uuid), .init("user_id", .uuid), .init("role", .text),
                .init("created_at", .date), .init("updated_at", .date), .init("pending_confirmation", .bool),
            ]),
        Table(
            name: "invitations", key: "id",
            columns: [
                .init("id", .uuid), .init("organization_id", .uuid), .init("email", .text), .init("role", .text),
                .init("token_hash", .text), .init("created_by", .text), .init("created_at", .date),
                .init("expires_at", .date), .init("accepted_at", .date), .init("accepted_by", .uuid),
                .init("revoked_at", .date),
            ]),
        Table(
            name: "integrations", key: "id",
            columns: [
                .init("id", .uuid), .init("owner_id", .uuid), .init("name", .text), .init("type", .text),
                .init("status", .text), .init("enabled", .bool), .init("config", .text),
                .init("credential_hint", .text),
                .init("current_version", .int), .init("last_used_at", .date), .init("last_verified_at", .date),
                .init("error_message", .text), .init("created_at", .date), .init("updated_at", .date),
                .init("verify_claimed_until", .date), .init("verification_details", .text),
                .init("verify_attempts", .int), .init("latest_version", .int), .init("rotation", .text),
                .init("rotation_reminded_version", .int), .init("credentials_changed_at", .date),
                .init("retire_error", .text), .init("template_id", .uuid),
            ]),
        Table(
            name: "secrets", key: "id",
            columns: [
                .init("id", .uuid), .init("integration_id", .uuid), .init("owner_id", .uuid), .init("version", .int),
                .init("kek_id", .text), .init("wrapped_dek", .bytes), .init("nonce", .bytes),
                .init("ciphertext", .bytes), .init("created_at", .date),
            ]),
        Table(
            name: "rotations", key: "id",
            columns: [
                .init("id", .uuid), .init("integration_id", .uuid), .init("owner_id", .uuid), .init("state", .text),
                .init("old_version", .int), .init("new_version", .int), .init("old_key_id", .text),
                .init("new_key_id", .text), .init("error", .text), .init("attempts", .int), .init("next_at", .date),
                .init("claimed_until", .date), .init("created_at", .date), .init("updated_at", .date),
            ]),
        Table(
            name: "unretired_keys", key: "id",
            columns: [
                .init("id", .uuid), .init("workspace_id", .uuid), .init("integration_id", .uuid),
                .init("integration_name", .text), .init("integration_type", .text), .init("rotation_id", .uuid),
                .init("key_id", .text), .init("reason", .text), .init("created_at", .date),
            ]),
        Table(
            name: "sessions", key: "id",
            columns: [
                .init("id", .text), .init("user_id", .uuid), .init("csrf_token", .text), .init("created_at", .date),
                .init("expires_at", .date), .init("last_seen_at", .date),
            ]),
        Table(
            name: "api_tokens", key: "id",
            columns: [
                .init("id", .uuid), .init("user_id", .uuid), .init("kind", .text), .init("name", .text),
                .init("token_hash", .text), .init("scopes", .text), .init("created_at", .date),
                .init("last_used_at", .date), .init("expires_at", .date), .init("revoked_at", .date),
                .init("workspace_id", .uuid),
            ]),
        Table(
            name: "audit_keys", key: "id",
            columns: [
                .init("id", .text), .init("kek_id", .text), .init("wrapped_key", .bytes), .init("created_at", .date),
            ]),
        Table(
            name: "audit_events", key: "seq",
            columns: [
                .init("seq", .int), .init("id", .uuid), .init("at", .text), .init("actor_type", .text),
                .init("actor_id", .text), .init("owner_id", .uuid), .init("action", .text),
                .init("integration_id", .uuid), .init("outcome", .text), .init("ip", .text),
                .init("user_agent", .text), .init("detail", .text), .init("prev_hash", .text), .init("hash", .text),
                .init("key_id", .text),
            ]),
        Table(
            name: "audit_checkpoints", key: "seq",
            columns: [
                .init("seq", .int), .init("head_hash", .text), .init("key_id", .text), .init("at", .text),
                .init("signature", .text),
            ]),
        Table(
            name: "usage_events", key: "id",
            columns: [
                .init("id", .uuid), .init("owner_id", .uuid), .init("integration_id", .uuid), .init("type", .text),
                .init("model", .text), .init("source", .text), .init("status", .int), .init("requests", .int),
                .init("input_tokens", .int), .init("cached_input_tokens", .int), .init("cache_write_tokens", .int),
                .init("output_tokens", .int), .init("reasoning_tokens", .int), .init("cost_micros", .int),
                .init("token_id", .uuid), .init("idempotency_key", .text), .init("occurred_at", .date),
                .init("recorded_at", .date), .init("estimated", .bool),
            ]),
        Table(
            name: "usage_daily", key: "id",
            columns: [
                .init("id", .uuid), .init("owner_id", .uuid), .init("integration_id", .uuid), .init("type", .text),
                .init("day", .text), .init("model", .text), .init("requests", .int), .init("input_tokens", .int),
                .init("cached_input_tokens", .int), .init("cache_write_tokens", .int), .init("output_tokens", .int),
                .init("reasoning_tokens", .int), .init("cost_micros", .int), .init("unpriced_requests", .int),
            ]),
        Table(
            name: "usage_limits", key: "id",
            columns: [
                .init("id", .uuid), .init("owner_id", .uuid), .init("monthly_budget_micros", .int),
                .init("requests_per_minute", .int), .init("tokens_per_minute", .int), .init("warned_month", .text),
                .init("updated_at", .date), .init("allow_unmetered", .bool),
            ]),
        Table(
            name: "gateway_routes", key: "id",
            columns: [
                .init("id", .uuid), .init("owner_id", .uuid), .init("name", .text), .init("integration_ids", .text),
                .init("created_at", .date), .init("updated_at", .date),
            ]),
        Table(
            name: "integration_templates", key: "id",
            columns: [
                .init("id", .uuid), .init("owner_id", .uuid), .init("name", .text), .init("type", .text),
                .init("name_pattern", .text), .init("config", .text), .init("rotation", .text), .init("limits", .text),
                .init("allowed_endpoints", .text), .init("created_at", .date), .init("updated_at", .date),
            ]),
        Table(
            name: "price_table", key: "id",
            columns: [
                .init("id", .int), .init("body", .text), .init("sha256", .text), .init("models", .int),
                .init("imported_at", .date),
            ]),
        Table(
            name: "price_overrides", key: "id",
            columns: [
                .init("id", .uuid), .init("owner_id", .uuid), .init("model", .text), .init("input_micros", .int),
                .init("output_micros", .int), .init("cached_input_micros", .int), .init("updated_at", .date),
            ]),
        Table(
            name: "rate_limits", key: "key",
            columns: [.init("key", .text), .init("window_start", .int), .init("count", .int)]),
    ]

    static func table(named name: String) -> Table? {
        tables.first { $0.name == name }
    }
}
