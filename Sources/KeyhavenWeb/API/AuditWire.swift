import Foundation
import KeyhavenCore

// The wire types of /api/audit (SPEC §8).

/// One audit event.
struct AuditEventResponse: ResponseBody {
    let event: AuditEvent

    var json: JSONValue {
        let detail = (try? JSONDecoder().decode(JSONValue.self, from: Data(event.detail.utf8))) ?? .object([:])
        return .object([
            "id": wireID(event.id),
            "seq": .number(Double(event.seq)),
            "at": .string(event.at),
            "actor_type": .string(event.actorType),
            "actor_id": event.actorID.map(JSONValue.string) ?? .null,
            "action": .string(event.action),
            "workspace_id": event.ownerID.map(wireID) ?? .null,
            "integration_id": event.integrationID.map(wireID) ?? .null,
            "outcome": .string(event.outcome),
            "ip": event.ip.map(JSONValue.string) ?? .null,
            "user_agent": event.userAgent.map(JSONValue.string) ?? .null,
            "detail": detail,
        ])
    }
}

/// `GET /api/audit`: a page and the cursor of the next one.
struct AuditPageResponse: ResponseBody {
    let events: [AuditEvent]
    let nextCursor: String?

    var json: JSONValue {
        .object([
            "events": .array(events.map { AuditEventResponse(event: $0).json }),
            "next_cursor": nextCursor.map(JSONValue.string) ?? .null,
        ])
    }
}
