import Foundation
import KeyhavenCore
import SQLKit

/// The users of an organization access test: one per role, an outsider, a member who was removed, and the member
/// whose role the cells change.
public struct Team: Sendable {
    public let owner: TestUser
    public let admin: TestUser
    public let member: TestUser
    public let viewer: TestUser
    public let outsider: TestUser
    public let removed: TestUser
    public let target: TestUser

    public init(api: APIHarness) async throws {
        owner = try await api.user()
        admin = try await api.user()
        member = try await api.user()
        viewer = try await api.user()
        outsider = try await api.user()
        removed = try await api.user()
        target = try await api.user()
    }

    /// A new organization owned by `owner`, with every other user but the outsider as a member of their role; the
    /// removed user was a member and was removed through the API.
    public func organization(_ api: APIHarness, name: String = "team \(UUID().uuidString.prefix(8))") async throws
        -> UUID
    {
        let created = try await api.request(.post, "/api/orgs", auth: owner.session, json: ["name": name])
        guard created.status == .created, let text = created.json["id"] as? String, let id = UUID(uuidString: text)
        else {
            throw TestSetupError("organization creation failed: \(created.text)")
        }
        let roles: [(TestUser, WorkspaceRole)] = [
            (admin, .admin), (member, .member), (viewer, .viewer), (removed, .member), (target, .member),
        ]
        try await api.runtime.database.transaction { sql in
            for (user, role) in roles {
                try await sql.raw(
                    """
                    INSERT INTO memberships (id, organization_id, user_id, role, created_at, updated_at)
                    VALUES (\(bind: UUID()), \(bind: id), \(bind: user.id), \(bind: role.rawValue), \(bind: Date()), \
                    \(bind: Date()))
                    """
                ).run()
            }
        }
        let removal = try await api.request(
            .delete, "/api/orgs/\(id.lowercased)/members/\(removed.id.lowercased)", auth: owner.session)
        guard removal.status == .noContent else { throw TestSetupError("removal failed: \(removal.text)") }
        return id
    }
}

extension UUID {
    /// The id as the API writes it.
    public var lowercased: String { uuidString.lowercased() }
}
