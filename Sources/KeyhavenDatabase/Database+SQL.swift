import SQLKit

extension Database {
    /// A PostgreSQL transaction lock named `name` within the current schema: instances sharing one schema
    /// serialise on it, deployments in different schemas of one database do not.
    package static func advisoryLock(_ name: String) -> SQLQueryString {
        """
        SELECT pg_advisory_xact_lock(hashtextextended(\(bind: "keyhaven." + name + ".") \
        || coalesce(current_schema(), ''), 0))
        """
    }

    /// `SUM(column)` of whole numbers that stops at the largest BIGINT instead of failing: SQLite's SUM throws
    /// "integer overflow" and PostgreSQL's BIGINT cast "out of range", either of which would make a workspace's
    /// usage unreadable for good once its rows add up past 2^63 (STYLE rule 12). NULL when there are no rows.
    package static func saturatingSum(_ column: String, _ kind: DatabaseKind) -> String {
        switch kind {
        case .sqlite: "saturating_sum(\(column))"
        // PostgreSQL sums BIGINTs as NUMERIC, which cannot overflow.
        case .postgres: "CAST(LEAST(SUM(\(column)), 9223372036854775807) AS BIGINT)"
        }
    }

    /// `stored + added` for a non-negative `added`, stopping at the largest BIGINT: the same SQL on both databases,
    /// for counters that upserts add to.
    package static func saturatingAdd(_ stored: String, _ added: String) -> String {
        "CASE WHEN \(stored) > 9223372036854775807 - \(added) THEN 9223372036854775807 ELSE \(stored) + \(added) END"
    }

    /// Column types that differ between the two dialects, for migrations.
    struct ColumnTypes {
        let uuid: String
        let timestamp: String
        let bytes: String
        let bool: String
        let bigint: String

        init(_ kind: DatabaseKind) {
            switch kind {
            case .sqlite:
                (uuid, timestamp, bytes, bool, bigint) = ("TEXT", "REAL", "BLOB", "INTEGER", "INTEGER")
            case .postgres:
                (uuid, timestamp, bytes, bool, bigint) = ("UUID", "TIMESTAMPTZ", "BYTEA", "BOOLEAN", "BIGINT")
            }
        }
    }
}
