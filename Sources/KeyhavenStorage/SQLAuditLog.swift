import Crypto
import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

/// The audit trail in `audit_events` (SPEC §8): each event's hash is HMAC-SHA-256, under the audit key, of the
/// previous event's hash and the canonical event, so editing, removing or reordering a stored event breaks the
/// chain at that event, and without the master keys the chain cannot be recomputed. Signed checkpoints of the head
/// (``checkpoint()``, also written to the log) reveal a tail deleted below them. Events written before the chain
/// was keyed keep their SHA-256 links and are verified as such; none may follow a keyed event.
public struct SQLAuditLog: AuditLog {
    let database: Database
    let keys: AuditKeys

    /// The `prev_hash` of the first event.
    static let genesis = String(repeating: "0", count: 64)

    /// Creates the audit log over `database`, chaining with `keys`.
    public init(database: Database, keys: AuditKeys) {
        self.database = database
        self.keys = keys
    }

    public func append(_ entry: AuditEntry) async throws {
        try await database.transaction { sql in try await append(entry, on: sql) }
    }

    /// Appends inside the caller's transaction, so the event commits or rolls back with the action it records.
    ///
    /// - Throws: `KeyhavenError.unavailable` if it could not be written.
    public func append(_ entry: AuditEntry, on sql: any SQLDatabase) async throws {
        try await append([entry], on: sql)
    }

    /// Appends several events, in order, inside the caller's transaction: one read of the head, one insert.
    ///
    /// - Throws: `KeyhavenError.unavailable` if they could not be written.
    public func append(_ entries: [AuditEntry], on sql: any SQLDatabase) async throws {
        guard !entries.isEmpty else { return }
        if database.kind == .postgres {
            // One writer at a time extends the chain, across every instance.
            try await sql.raw(Database.advisoryLock("audit")).run()
        }
        let chainStart = ContinuousClock.now
        let rows = rows(entries, after: try await head(on: sql)).joined(separator: ", ")
        database.timings.add(.auditChain, since: chainStart)
        try await database.timings.measure(.auditInsert) {
            try await sql.raw("INSERT INTO audit_events (\(unsafeRaw: Self.columns)) VALUES \(rows)").run()
        }
    }

    /// Where the next event chains on: the last event's sequence number and hash.
    struct Head: Sendable {
        var seq: Int64
        var hash: String
    }

    /// The chain's head as `sql` sees it (the genesis for an empty trail).
    func head(on sql: any SQLDatabase) async throws -> Head {
        let last = try await sql.raw("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").first()
        return try head(last, seq: "seq", hash: "hash")
    }

    /// The head in `row`'s columns `seq` and `hash` (the genesis when they are NULL or there is no row).
    func head(_ row: (any SQLRow)?, seq: String, hash: String) throws -> Head {
        Head(
            seq: try row?.decode(column: seq, as: Int64?.self) ?? 0,
            hash: try row?.decode(column: hash, as: String?.self) ?? Self.genesis)
    }

    /// The columns of an event row, in the order of ``rows(_:after:)``.
    static let columns = """
        seq, id, at, actor_type, actor_id, owner_id, action, integration_id, outcome, ip, user_agent, detail, \
        prev_hash, hash, key_id
        """

    /// `entries` as the events that follow `head`, chained and MACed.
    func events(_ entries: [AuditEntry], after head: Head) -> [AuditEvent] {
        var seq = head.seq
        var prevHash = head.hash
        let at = Self.now()
        return entries.map { entry in
            seq += 1
            var event = AuditEvent(
                seq: seq, id: UUID.timeOrdered(), at: at, actorType: entry.actor.kind.rawValue, actorID: entry.actor.id,
                ownerID: entry.ownerID, action: entry.action.rawValue, integrationID: entry.integrationID,
                outcome: entry.outcome.rawValue, ip: entry.actor.ip, userAgent: entry.actor.userAgent,
                detail: Self.canonicalJSON(.object(entry.detail)), prevHash: prevHash, hash: "", keyID: keys.current.id)
            event.hash = keys.current.mac(bytes: Self.chainedBytes(event))
            prevHash = event.hash
            return event
        }
    }

    /// `entries` as the events that follow `head`, chained and MACed: each a row `(…)` of a `VALUES` list.
    func rows(_ entries: [AuditEntry], after head: Head) -> [SQLQueryString] {
        events(entries, after: head).map { event in
            let values: [any Encodable & Sendable] = [
                event.seq, event.id, event.at, event.actorType, event.actorID, event.ownerID, event.action,
                event.integrationID, event.outcome, event.ip, event.userAgent, event.detail, event.prevHash, event.hash,
                event.keyID,
            ]
            return "(\(binds: values))"
        }
    }

    /// Events as one JSON array of objects keyed by column, for PostgreSQL's `jsonb_to_recordset(…) AS e
    /// (\(recordColumns))`: a statement of one shape (and one bind) however many events it writes.
    static func json(_ events: [AuditEvent]) -> String {
        func text(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
        return JSONValue.array(
            events.map { event in
                .object([
                    "seq": .string(String(event.seq)), "id": .string(event.id.lowercasedText), "at": .string(event.at),
                    "actor_type": .string(event.actorType), "actor_id": text(event.actorID),
                    "owner_id": text(event.ownerID?.lowercasedText), "action": .string(event.action),
                    "integration_id": text(event.integrationID?.lowercasedText), "outcome": .string(event.outcome),
                    "ip": text(event.ip), "user_agent": text(event.userAgent), "detail": .string(event.detail),
                    "prev_hash": .string(event.prevHash), "hash": .string(event.hash), "key_id": text(event.keyID),
                ])
            }
        ).jsonText
    }

    /// The columns of an event row with their PostgreSQL types, for ``json(_:)``.
    static let recordColumns = """
        seq bigint, id uuid, at text, actor_type text, actor_id text, owner_id uuid, action text, integration_id uuid, \
        outcome text, ip text, user_agent text, detail text, prev_hash text, hash text, key_id text
        """

    /// A signed record of the chain's head: its sequence number and hash, MACed with the audit key.
    public struct Checkpoint: Sendable, Equatable {
        public var seq: Int64
        public var headHash: String
        public var keyID: String
        public var at: String
        public var signature: String

        var signedText: String { "keyhaven:audit-checkpoint:v1|\(seq)|\(headHash)|\(keyID)|\(at)" }
    }

    /// Records a signed checkpoint of the current head, unless one exists for it already; returns it (nil for an
    /// empty trail). `audit verify` then refuses a trail that ends below it.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    @discardableResult
    public func checkpoint() async throws -> Checkpoint? {
        try await database.transaction { sql in
            if database.kind == .postgres { try await sql.raw(Database.advisoryLock("audit")).run() }
            guard let head = try await sql.raw("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").first()
            else {
                return nil
            }
            var checkpoint = Checkpoint(
                seq: try head.decode(column: "seq", as: Int64.self),
                headHash: try head.decode(column: "hash", as: String.self),
                keyID: keys.current.id, at: Self.now(), signature: "")
            if let existing = try await sql.raw(
                "SELECT * FROM audit_checkpoints WHERE seq = \(bind: checkpoint.seq)"
            ).first() {
                return try Self.checkpoint(from: existing)
            }
            checkpoint.signature = keys.current.mac(checkpoint.signedText)
            try await sql.raw(
                """
                INSERT INTO audit_checkpoints (seq, head_hash, key_id, at, signature) VALUES (\(bind: checkpoint.seq), \
                \(bind: checkpoint.headHash), \(bind: checkpoint.keyID), \(bind: checkpoint.at),
                \(bind: checkpoint.signature))
                """
            ).run()
            return checkpoint
        }
    }

    public func events(
        ownerID: UUID, integrationID: UUID?, integrationsOnly: Bool, limit: Int, before: Int64?
    ) async throws -> [AuditEvent] {
        try await database.withConnection { sql in
            var query = SQLQueryString("SELECT * FROM audit_events WHERE owner_id = \(bind: ownerID)")
            if let integrationID {
                query.appendInterpolation(unsafeRaw: " AND integration_id = ")
                query.appendInterpolation(bind: integrationID)
            } else if integrationsOnly {
                query.appendInterpolation(unsafeRaw: " AND integration_id IS NOT NULL")
            }
            if let before {
                query.appendInterpolation(unsafeRaw: " AND seq < ")
                query.appendInterpolation(bind: before)
            }
            query.appendInterpolation(unsafeRaw: " ORDER BY seq DESC LIMIT ")
            query.appendInterpolation(bind: limit)
            return try await sql.raw(query).all().map(Self.event(from:))
        }
    }

    public func verify() async throws -> AuditVerification {
        try await database.withConnection { sql in try await Self.verify(on: sql, keys: keys) }
    }

    /// Recomputes the chain on `sql` (a restore checks it inside its own transaction, before committing).
    package static func verify(on sql: any SQLDatabase, keys: AuditKeys) async throws -> AuditVerification {
        do {
            var checkpoints: [Int64: Checkpoint] = [:]
            for row in try await sql.raw("SELECT * FROM audit_checkpoints ORDER BY seq").all() {
                let checkpoint = try Self.checkpoint(from: row)
                guard let key = keys.key(id: checkpoint.keyID),
                    key.verify(checkpoint.signature, of: checkpoint.signedText)
                else {
                    return .broken(seq: checkpoint.seq, reason: "its checkpoint is not signed with the audit key")
                }
                checkpoints[checkpoint.seq] = checkpoint
            }
            var previous = Self.genesis
            var expectedSeq: Int64 = 1
            var count = 0
            var keyed = false
            while true {
                let rows = try await sql.raw(
                    "SELECT * FROM audit_events WHERE seq >= \(bind: expectedSeq) ORDER BY seq LIMIT 1000"
                ).all()
                if rows.isEmpty { break }
                for row in rows {
                    let event: AuditEvent
                    do {
                        event = try Self.event(from: row)
                    } catch {
                        let seq = (try? row.decode(column: "seq", as: Int64.self)) ?? expectedSeq
                        return .broken(seq: seq, reason: "the event cannot be read")
                    }
                    if event.seq != expectedSeq {
                        return .broken(seq: expectedSeq, reason: "event \(expectedSeq) is missing")
                    }
                    if event.prevHash != previous {
                        return .broken(seq: event.seq, reason: "it does not link to the event before it")
                    }
                    if let keyID = event.keyID {
                        guard let key = keys.key(id: keyID) else {
                            return .broken(seq: event.seq, reason: "it names an audit key this database does not have")
                        }
                        guard key.verify(event.hash, ofBytes: Self.chainedBytes(event)) else {
                            return .broken(seq: event.seq, reason: "its contents do not match its hash")
                        }
                        keyed = true
                    } else {
                        guard !keyed else {
                            return .broken(seq: event.seq, reason: "an unkeyed event follows keyed ones")
                        }
                        guard Self.legacyHash(event) == event.hash else {
                            return .broken(seq: event.seq, reason: "its contents do not match its hash")
                        }
                    }
                    if let checkpoint = checkpoints[event.seq], checkpoint.headHash != event.hash {
                        return .broken(seq: event.seq, reason: "it differs from the signed checkpoint of that event")
                    }
                    previous = event.hash
                    expectedSeq += 1
                    count += 1
                }
            }
            if let last = checkpoints.keys.max(), last >= expectedSeq {
                return .broken(
                    seq: expectedSeq,
                    reason:
                        "events \(expectedSeq) to \(last) are missing: a "
                        + "signed checkpoint records the trail up to \(last)"
                )
            }
            return .intact(events: count)
        }
    }

    /// A stored event as one line of text (for scans and exports).
    public static func eventText(_ row: any SQLRow) throws -> String {
        let event = try event(from: row)
        return [
            String(event.seq), event.id.uppercasedText, event.at, event.actorType, event.actorID ?? "",
            event.ownerID?.uppercasedText ?? "", event.action, event.integrationID?.uppercasedText ?? "", event.outcome,
            event.ip ?? "", event.userAgent ?? "", event.detail, event.prevHash, event.hash, event.keyID ?? "",
        ].joined(separator: "|")
    }

    static func event(from row: any SQLRow) throws -> AuditEvent {
        AuditEvent(
            seq: try row.decode(column: "seq", as: Int64.self),
            id: try row.decode(column: "id", as: UUID.self),
            at: try row.decode(column: "at", as: String.self),
            actorType: try row.decode(column: "actor_type", as: String.self),
            actorID: try row.decode(column: "actor_id", as: String?.self),
            ownerID: try row.decode(column: "owner_id", as: UUID?.self),
            action: try row.decode(column: "action", as: String.self),
            integrationID: try row.decode(column: "integration_id", as: UUID?.self),
            outcome: try row.decode(column: "outcome", as: String.self),
            ip: try row.decode(column: "ip", as: String?.self),
            userAgent: try row.decode(column: "user_agent", as: String?.self),
            detail: try row.decode(column: "detail", as: String.self),
            prevHash: try row.decode(column: "prev_hash", as: String.self),
            hash: try row.decode(column: "hash", as: String.self),
            keyID: try row.decode(column: "key_id", as: String?.self))
    }

    /// The bytes an event's hash covers: ``chainedText``'s, written straight into one buffer, field by field in the
    /// canonical (sorted) order, with no dictionary, sort or intermediate string: every audited action computes it
    /// in the writer's transaction. Stored chains were hashed over ``chainedText``, so the two must never differ
    /// (`AuditChainTextTests`).
    static func chainedBytes(_ event: AuditEvent) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(384 + event.detail.utf8.count + (event.userAgent?.utf8.count ?? 0))
        output.append(contentsOf: event.prevHash.utf8)
        var separator = UInt8(ascii: "{")
        func field(_ name: String, _ value: String?) {
            output.append(separator)
            separator = UInt8(ascii: ",")
            output.append(UInt8(ascii: "\""))
            output.append(contentsOf: name.utf8)
            output.append(contentsOf: "\":".utf8)
            if let value { JSONValue.write(string: value, to: &output) } else { output.append(contentsOf: "null".utf8) }
        }
        // Sorted by their bytes, as `JSONValue.jsonText` sorts keys.
        field("action", event.action)
        field("actor_id", event.actorID)
        field("actor_type", event.actorType)
        field("at", event.at)
        field("detail", event.detail)
        field("id", event.id.lowercasedText)
        field("integration_id", event.integrationID?.lowercasedText)
        field("ip", event.ip)
        field("key_id", event.keyID)
        field("outcome", event.outcome)
        field("owner_id", event.ownerID?.lowercasedText)
        field("seq", String(event.seq))
        field("user_agent", event.userAgent)
        output.append(UInt8(ascii: "}"))
        return output
    }

    /// The text an event's hash covers: the previous hash, then the canonical event with the key that chains it.
    static func chainedText(_ event: AuditEvent) -> String {
        var fields = canonicalFields(event)
        fields["key_id"] = event.keyID.map(JSONValue.string) ?? .null
        return event.prevHash + canonicalJSON(.object(fields))
    }

    /// SHA-256(prev_hash ‖ canonical event), hex: the unkeyed chain of events written before it was keyed.
    static func legacyHash(_ event: AuditEvent) -> String {
        let digest = SHA256.hash(data: Data((event.prevHash + canonicalJSON(.object(canonicalFields(event)))).utf8))
        return Hex.encode(digest)
    }

    private static func canonicalFields(_ event: AuditEvent) -> [String: JSONValue] {
        var fields: [String: JSONValue] = [
            "seq": .string(String(event.seq)), "id": .string(event.id.lowercasedText), "at": .string(event.at),
            "actor_type": .string(event.actorType), "action": .string(event.action), "outcome": .string(event.outcome),
            "detail": .string(event.detail),
        ]
        fields["actor_id"] = event.actorID.map(JSONValue.string) ?? .null
        fields["owner_id"] = event.ownerID.map { .string($0.lowercasedText) } ?? .null
        fields["integration_id"] = event.integrationID.map { .string($0.lowercasedText) } ?? .null
        fields["ip"] = event.ip.map(JSONValue.string) ?? .null
        fields["user_agent"] = event.userAgent.map(JSONValue.string) ?? .null
        return fields
    }

    static func now() -> String { Date().timestampText }

    static func checkpoint(from row: any SQLRow) throws -> Checkpoint {
        Checkpoint(
            seq: try row.decode(column: "seq", as: Int64.self),
            headHash: try row.decode(column: "head_hash", as: String.self),
            keyID: try row.decode(column: "key_id", as: String.self), at: try row.decode(column: "at", as: String.self),
            signature: try row.decode(column: "signature", as: String.self))
    }

    /// JSON with sorted keys and no insignificant whitespace, as stored chains were hashed (`JSONValue.jsonText`).
    static func canonicalJSON(_ value: JSONValue) -> String { value.jsonText }
}
