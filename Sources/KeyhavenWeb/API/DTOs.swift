import Foundation
import KeyhavenCore

/// Dates on the wire: ISO 8601 with milliseconds, UTC.
func wireDate(_ date: Date?) -> JSONValue {
    date.map { .string($0.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))) } ?? .null
}

extension Integration {
    /// The integration object of SPEC §6; every field is present, null when unset. Never any credential.
    func dto() -> JSONValue {
        .object([
            "id": .string(id.uuidString.lowercased()),
            "name": .string(name),
            "type": .string(type.rawValue),
            "status": .string(status.rawValue),
            "enabled": .bool(enabled),
            "config": .object(config),
            "credential_hint": credentialHint.map(JSONValue.string) ?? .null,
            "credential_version": .number(Double(credentialVersion)),
            "error_message": errorMessage.map(JSONValue.string) ?? .null,
            "last_verified_at": wireDate(lastVerifiedAt),
            "last_used_at": wireDate(lastUsedAt),
            "created_at": wireDate(createdAt),
            "updated_at": wireDate(updatedAt),
        ])
    }
}

extension User {
    func dto() -> JSONValue {
        .object(["id": .string(id.uuidString.lowercased()), "email": email.map(JSONValue.string) ?? .null])
    }
}

extension APIToken {
    func dto() -> JSONValue {
        .object([
            "id": .string(id.uuidString.lowercased()),
            "name": .string(name),
            "kind": .string(kind.rawValue),
            "scopes": .array(scopes.map(\.rawValue).sorted().map(JSONValue.string)),
            "created_at": wireDate(createdAt),
            "last_used_at": wireDate(lastUsedAt),
            "expires_at": wireDate(expiresAt),
            "revoked_at": wireDate(revokedAt),
        ])
    }
}

extension AuditEvent {
    func dto() -> JSONValue {
        let detailObject = (try? JSONDecoder().decode(JSONValue.self, from: Data(detail.utf8))) ?? .object([:])
        return .object([
            "id": .string(id.uuidString.lowercased()),
            "seq": .number(Double(seq)),
            "at": .string(at),
            "actor_type": .string(actorType),
            "actor_id": actorID.map(JSONValue.string) ?? .null,
            "action": .string(action),
            "integration_id": integrationID.map { .string($0.uuidString.lowercased()) } ?? .null,
            "outcome": .string(outcome),
            "ip": ip.map(JSONValue.string) ?? .null,
            "user_agent": userAgent.map(JSONValue.string) ?? .null,
            "detail": detailObject,
        ])
    }
}
