import Foundation
import KeyhavenCore
import KeyhavenDatabase
import SQLKit

/// Organizations in `organizations`, their members in `memberships`, invitations (hashed tokens) in `invitations`.
///
/// Every change of an organization's members locks the organization's row first (PostgreSQL; SQLite has one
/// writer), so two owners demoting each other at once cannot leave it without an owner.
public struct SQLOrganizationStore: OrganizationStore {
    let database: Database
    let audit: SQLAuditLog

    /// Creates the store.
    public init(database: Database, audit: SQLAuditLog) {
        self.database = database
        self.audit = audit
    }

    public func role(of userID: UUID, in workspaceID: UUID) async throws -> WorkspaceRole? {
        if userID == workspaceID { return .owner }
        return try await database.withConnection { sql in
            try await Self.role(of: userID, in: workspaceID, on: sql)
        }
    }

    static func role(of userID: UUID, in organizationID: UUID, on sql: any SQLDatabase) async throws -> WorkspaceRole? {
        guard
            let text = try await sql.raw(
                """
                SELECT role FROM memberships WHERE organization_id = \(bind: organizationID)
                AND user_id = \(bind: userID) AND NOT pending_confirmation
                """
            ).first()?.decode(column: "role", as: String.self)
        else { return nil }
        guard let role = WorkspaceRole(rawValue: text) else { throw KeyhavenError.internalError }
        return role
    }

    public func create(name: String, by userID: UUID, actor: AuditActor) async throws -> Organization {
        let now = Date()
        let organization = Organization(id: UUID.timeOrdered(now: now), name: name, createdAt: now, updatedAt: now)
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO organizations (id, name, created_at, updated_at)
                VALUES (\(bind: organization.id), \(bind: name), \(bind: now), \(bind: now))
                """
            ).run()
            try await insertMember(userID, role: .owner, in: organization.id, now: now, on: sql)
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .organizationCreate, ownerID: organization.id, detail: ["name": .string(name)]
                ),
                on: sql)
        }
        return organization
    }

    public func list(userID: UUID) async throws -> [(Organization, WorkspaceRole)] {
        try await database.withConnection { sql in
            try await sql.raw(
                """
                SELECT o.*, m.role FROM memberships m JOIN organizations o ON o.id = m.organization_id
                WHERE m.user_id = \(bind: userID) AND NOT m.pending_confirmation ORDER BY o.name, o.id
                """
            ).all().map { row in
                guard let role = WorkspaceRole(rawValue: try row.decode(column: "role", as: String.self)) else {
                    throw KeyhavenError.internalError
                }
                return (try Self.organization(row), role)
            }
        }
    }

    public func get(id: UUID) async throws -> Organization {
        try await database.withConnection { sql in try await fetch(id, on: sql) }
    }

    public func rename(id: UUID, to name: String, actor: AuditActor) async throws -> Organization {
        try await database.transaction { sql in
            var organization = try await fetch(id, lock: true, on: sql)
            guard organization.name != name else { return organization }
            organization.name = name
            organization.updatedAt = Date()
            try await sql.raw(
                """
                UPDATE organizations SET name = \(bind: name), updated_at = \(bind: organization.updatedAt)
                WHERE id = \(bind: id)
                """
            ).run()
            try await audit.append(
                AuditEntry(actor: actor, action: .organizationUpdate, ownerID: id, detail: ["name": .string(name)]),
                on: sql)
            return organization
        }
    }

    public func delete(id: UUID, confirmation: String, actor: AuditActor) async throws {
        try await database.transaction { sql in
            let organization = try await fetch(id, lock: true, on: sql)
            guard confirmation == organization.name else {
                throw KeyhavenError.conflict("The confirmation must be the organization's name, exactly.")
            }
            // The integrations' rows first (the lock order of every writer), then their secrets, then the rows;
            // memberships, invitations and rotations go with their parents.
            if database.kind == .postgres {
                try await sql.raw("SELECT id FROM integrations WHERE owner_id = \(bind: id) ORDER BY id FOR UPDATE")
                    .run()
            }
            var unretired: [String] = []
            let rotated = try await sql.raw(
                """
                SELECT * FROM integrations WHERE owner_id = \(bind: id)
                AND id IN (SELECT integration_id FROM rotations)
                """
            ).all().map(SQLIntegrationStore.integration)
            for integration in rotated {
                unretired += try await SQLRotationStore.recordUnretired(integration, now: Date(), on: sql)
            }
            let destroyed = try await sql.raw("DELETE FROM secrets WHERE owner_id = \(bind: id) RETURNING id").all()
                .count
            let integrations = try await sql.raw(
                "DELETE FROM integrations WHERE owner_id = \(bind: id) RETURNING id"
            ).all().count
            let now = Date()
            let tokens = try await sql.raw(
                """
                UPDATE api_tokens SET revoked_at = \(bind: now) WHERE workspace_id = \(bind: id) AND revoked_at IS NULL
                RETURNING id
                """
            ).all().count
            try await SQLUsageStore.deleteAll(ownerID: id, on: sql)
            try await sql.raw("DELETE FROM gateway_routes WHERE owner_id = \(bind: id)").run()
            try await sql.raw("DELETE FROM usage_limits WHERE owner_id = \(bind: id)").run()
            try await sql.raw("DELETE FROM price_overrides WHERE owner_id = \(bind: id)").run()
            try await sql.raw("DELETE FROM organizations WHERE id = \(bind: id)").run()
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .organizationDelete, ownerID: id,
                    detail: [
                        "name": .string(organization.name), "deleted_integrations": .number(Double(integrations)),
                        "destroyed_versions": .number(Double(destroyed)), "revoked_tokens": .number(Double(tokens)),
                        "unretired_provider_keys": .array(unretired.map(JSONValue.string)),
                    ]),
                on: sql)
        }
        await database.eraseDestroyedFromLog()
    }

    public func members(of organizationID: UUID) async throws -> [Member] {
        try await database.withConnection { sql in
            try await sql.raw(
                """
                SELECT m.user_id, m.role, m.created_at, m.pending_confirmation, u.email FROM memberships m
                JOIN users u ON u.id = m.user_id
                WHERE m.organization_id = \(bind: organizationID) ORDER BY lower(u.email), m.user_id
                """
            ).all().map(Self.member)
        }
    }

    public func setRole(
        _ role: WorkspaceRole, of userID: UUID, in organizationID: UUID, allowOwners: Bool, actor: AuditActor
    ) async throws -> Member {
        try await database.transaction { sql in
            _ = try await fetch(organizationID, lock: true, on: sql)
            var member = try await fetchMember(userID, in: organizationID, on: sql)
            guard member.role != role else { return member }
            try requireOwnerChange(allowed: allowOwners || (member.role != .owner && role != .owner))
            if member.role == .owner { try await requireAnotherOwner(than: userID, in: organizationID, on: sql) }
            try await sql.raw(
                """
                UPDATE memberships SET role = \(bind: role.rawValue), updated_at = \(bind: Date())
                WHERE organization_id = \(bind: organizationID) AND user_id = \(bind: userID)
                """
            ).run()
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .memberUpdate, ownerID: organizationID,
                    detail: [
                        "user_id": .string(userID.lowercasedText), "from": .string(member.role.rawValue),
                        "role": .string(role.rawValue),
                    ]),
                on: sql)
            member.role = role
            return member
        }
    }

    public func remove(_ userID: UUID, from organizationID: UUID, allowOwners: Bool, actor: AuditActor) async throws {
        try await database.transaction { sql in
            _ = try await fetch(organizationID, lock: true, on: sql)
            let member = try await fetchMember(userID, in: organizationID, on: sql)
            if member.role == .owner {
                try requireOwnerChange(allowed: allowOwners)
                try await requireAnotherOwner(than: userID, in: organizationID, on: sql)
            }
            try await sql.raw(
                "DELETE FROM memberships WHERE organization_id = \(bind: organizationID) AND user_id = \(bind: userID)"
            ).run()
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .memberRemove, ownerID: organizationID,
                    detail: ["user_id": .string(userID.lowercasedText), "role": .string(member.role.rawValue)]),
                on: sql)
        }
    }

    public func confirm(_ userID: UUID, in organizationID: UUID, allowOwners: Bool, actor: AuditActor) async throws
        -> Member
    {
        try await database.transaction { sql in
            _ = try await fetch(organizationID, lock: true, on: sql)
            var member = try await fetchMember(userID, in: organizationID, on: sql)
            guard member.pendingConfirmation else { throw KeyhavenError.notFound }
            try requireOwnerChange(allowed: allowOwners || member.role != .owner)
            try await sql.raw(
                """
                UPDATE memberships SET pending_confirmation = \(bind: false), updated_at = \(bind: Date())
                WHERE organization_id = \(bind: organizationID) AND user_id = \(bind: userID)
                """
            ).run()
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .memberConfirm, ownerID: organizationID,
                    detail: ["user_id": .string(userID.lowercasedText), "role": .string(member.role.rawValue)]),
                on: sql)
            member.pendingConfirmation = false
            return member
        }
    }

    public func invite(
        email: String, role: WorkspaceRole, to organizationID: UUID, actor: AuditActor, now: Date
    ) async throws -> (token: String, invitation: Invitation) {
        let token = RandomToken.make(prefix: "kh_inv_")
        let invitation = Invitation(
            id: UUID.timeOrdered(now: now), organizationID: organizationID, email: email, role: role, createdAt: now,
            expiresAt: now.addingTimeInterval(Invitation.lifetime), acceptedAt: nil, revokedAt: nil)
        try await database.transaction { sql in
            _ = try await fetch(organizationID, lock: true, on: sql)
            let member = try await sql.raw(
                """
                SELECT m.user_id FROM memberships m JOIN users u ON u.id = m.user_id
                WHERE m.organization_id = \(bind: organizationID) AND lower(u.email) = lower(\(bind: email))
                """
            ).first()
            if member != nil { throw KeyhavenError.conflict("Someone with this email is already a member.") }
            // One live link per email: a new invitation replaces the ones still pending.
            let replaced = try await sql.raw(
                """
                UPDATE invitations SET revoked_at = \(bind: now)
                WHERE organization_id = \(bind: organizationID) AND lower(email) = lower(\(bind: email))
                AND accepted_at IS NULL AND revoked_at IS NULL RETURNING id
                """
            ).all().count
            try await sql.raw(
                """
                INSERT INTO invitations (id, organization_id, email, role, token_hash, created_by, created_at,
                expires_at)
                VALUES (\(bind: invitation.id), \(bind: organizationID), \(bind: email), \(bind: role.rawValue), \
                \(bind: TokenMaterial.hash(token)), \(bind: actor.id), \(bind: now), \(bind: invitation.expiresAt))
                """
            ).run()
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .invitationCreate, ownerID: organizationID,
                    detail: [
                        "invitation_id": .string(invitation.id.lowercasedText), "email": .string(email),
                        "role": .string(role.rawValue), "replaced": .number(Double(replaced)),
                    ]),
                on: sql)
        }
        return (token, invitation)
    }

    public func invitations(of organizationID: UUID, now: Date) async throws -> [Invitation] {
        try await database.withConnection { sql in
            try await sql.raw(
                """
                SELECT * FROM invitations WHERE organization_id = \(bind: organizationID) AND accepted_at IS NULL
                AND revoked_at IS NULL AND expires_at > \(bind: now) ORDER BY created_at DESC, id DESC
                """
            ).all().map(Self.invitation)
        }
    }

    public func revokeInvitation(id: UUID, in organizationID: UUID, actor: AuditActor) async throws {
        try await database.transaction { sql in
            guard
                try await sql.raw(
                    """
                    UPDATE invitations SET revoked_at = \(bind: Date())
                    WHERE id = \(bind: id) AND organization_id = \(bind: organizationID) AND accepted_at IS NULL
                    AND revoked_at IS NULL RETURNING id
                    """
                ).first() != nil
            else { throw KeyhavenError.notFound }
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .invitationRevoke, ownerID: organizationID,
                    detail: ["invitation_id": .string(id.lowercasedText)]),
                on: sql)
        }
    }

    public func accept(token: String, user: User, actor: AuditActor, now: Date) async throws -> (Organization, Member) {
        try await database.transaction { sql in
            // The organization's row is locked before the invitation's, as in every change of its members.
            let hash = TokenMaterial.hash(token)
            guard
                let organizationID = try await sql.raw(
                    "SELECT organization_id FROM invitations WHERE token_hash = \(bind: hash)"
                ).first()?.decode(column: "organization_id", as: UUID.self)
            else { throw KeyhavenError.notFound }
            let organization = try await fetch(organizationID, lock: true, on: sql)
            let lock = database.kind == .postgres ? " FOR UPDATE" : ""
            guard
                let row = try await sql.raw(
                    "SELECT * FROM invitations WHERE token_hash = \(bind: hash)\(unsafeRaw: lock)"
                ).first()
            else { throw KeyhavenError.notFound }
            let invitation = try Self.invitation(row)
            guard let email = user.email, email.lowercased() == invitation.email.lowercased() else {
                throw KeyhavenError.forbidden("This invitation is for another email address.")
            }
            let state = invitation.state(now: now)
            if let refusal = state.refusal { throw KeyhavenError.gone(refusal) }
            let existing = try await sql.raw(
                """
                SELECT id FROM memberships WHERE organization_id = \(bind: organization.id)
                AND user_id = \(bind: user.id)
                """
            ).first()
            if existing != nil { throw KeyhavenError.conflict("You are already a member of this organization.") }
            // The invited address may have been registered by someone else after the link leaked: an account made
            // after the invitation waits for an owner's or admin's word.
            let pending = user.createdAt > invitation.createdAt
            try await sql.raw(
                """
                UPDATE invitations SET accepted_at = \(bind: now), accepted_by = \(bind: user.id)
                WHERE id = \(bind: invitation.id)
                """
            ).run()
            try await insertMember(
                user.id, role: invitation.role, in: organization.id, pending: pending, now: now, on: sql)
            try await audit.append(
                AuditEntry(
                    actor: actor, action: .invitationAccept, ownerID: organization.id,
                    detail: [
                        "invitation_id": .string(invitation.id.lowercasedText),
                        "user_id": .string(user.id.lowercasedText), "role": .string(invitation.role.rawValue),
                        "pending_confirmation": .bool(pending),
                    ]),
                on: sql)
            return (
                organization,
                Member(
                    userID: user.id, email: user.email, role: invitation.role, joinedAt: now,
                    pendingConfirmation: pending)
            )
        }
    }

    // MARK: Rows

    private func insertMember(
        _ userID: UUID, role: WorkspaceRole, in organizationID: UUID, pending: Bool = false, now: Date,
        on sql: any SQLDatabase
    ) async throws {
        try await sql.raw(
            """
            INSERT INTO memberships (id, organization_id, user_id, role, created_at, updated_at, pending_confirmation)
            VALUES (\(bind: UUID()), \(bind: organizationID), \(bind: userID), \(bind: role.rawValue), \(bind: now), \
            \(bind: now), \(bind: pending))
            """
        ).run()
    }

    private func requireOwnerChange(allowed: Bool) throws {
        guard allowed else { throw KeyhavenError.forbidden(Policy.forbiddenMessage(.manageOwners)) }
    }

    /// Refuses to let `userID` stop being an owner unless another owner who can still sign in remains: a disabled
    /// account is no owner anyone can reach.
    private func requireAnotherOwner(than userID: UUID, in organizationID: UUID, on sql: any SQLDatabase) async throws {
        let owners =
            try await sql.raw(
                """
                SELECT COUNT(*) AS owners FROM memberships m JOIN users u ON u.id = m.user_id
                WHERE m.organization_id = \(bind: organizationID) AND m.role = \(bind: WorkspaceRole.owner.rawValue)
                AND m.user_id <> \(bind: userID) AND u.disabled_at IS NULL AND NOT m.pending_confirmation
                """
            ).first()?.decode(column: "owners", as: Int.self) ?? 0
        guard owners > 0 else {
            throw KeyhavenError.conflict(
                "An organization always keeps an owner who can sign in: make "
                    + "another member an owner first, or delete the organization."
            )
        }
    }

    /// The organization; with `lock`, its row is locked (PostgreSQL) before anything else the transaction touches.
    private func fetch(_ id: UUID, lock: Bool = false, on sql: any SQLDatabase) async throws -> Organization {
        let clause = lock && database.kind == .postgres ? " FOR UPDATE" : ""
        guard
            let row = try await sql.raw("SELECT * FROM organizations WHERE id = \(bind: id)\(unsafeRaw: clause)")
                .first()
        else { throw KeyhavenError.notFound }
        return try Self.organization(row)
    }

    private func fetchMember(_ userID: UUID, in organizationID: UUID, on sql: any SQLDatabase) async throws -> Member {
        guard
            let row = try await sql.raw(
                """
                SELECT m.user_id, m.role, m.created_at, m.pending_confirmation, u.email FROM memberships m
                JOIN users u ON u.id = m.user_id
                WHERE m.organization_id = \(bind: organizationID) AND m.user_id = \(bind: userID)
                """
            ).first()
        else { throw KeyhavenError.notFound }
        return try Self.member(row)
    }

    static func organization(_ row: any SQLRow) throws -> Organization {
        Organization(
            id: try row.decode(column: "id", as: UUID.self), name: try row.decode(column: "name", as: String.self),
            createdAt: try row.decode(column: "created_at", as: Date.self),
            updatedAt: try row.decode(column: "updated_at", as: Date.self))
    }

    static func member(_ row: any SQLRow) throws -> Member {
        guard let role = WorkspaceRole(rawValue: try row.decode(column: "role", as: String.self)) else {
            throw KeyhavenError.internalError
        }
        return Member(
            userID: try row.decode(column: "user_id", as: UUID.self),
            email: try row.decode(column: "email", as: String?.self),
            role: role, joinedAt: try row.decode(column: "created_at", as: Date.self),
            pendingConfirmation: try row.decode(column: "pending_confirmation", as: Bool.self))
    }

    static func invitation(_ row: any SQLRow) throws -> Invitation {
        guard let role = WorkspaceRole(rawValue: try row.decode(column: "role", as: String.self)) else {
            throw KeyhavenError.internalError
        }
        return Invitation(
            id: try row.decode(column: "id", as: UUID.self),
            organizationID: try row.decode(column: "organization_id", as: UUID.self),
            email: try row.decode(column: "email", as: String.self), role: role,
            createdAt: try row.decode(column: "created_at", as: Date.self),
            expiresAt: try row.decode(column: "expires_at", as: Date.self),
            acceptedAt: try row.decode(column: "accepted_at", as: Date?.self),
            revokedAt: try row.decode(column: "revoked_at", as: Date?.self))
    }
}
