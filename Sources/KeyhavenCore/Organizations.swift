import Foundation

/// What a user may do in a workspace (SPEC §12). A user is the `owner` of their personal workspace.
public enum WorkspaceRole: String, Sendable, CaseIterable, Codable, Comparable {
    case viewer
    case member
    case admin
    case owner

    private var rank: Int {
        switch self {
        case .viewer: 0
        case .member: 1
        case .admin: 2
        case .owner: 3
        }
    }

    public static func < (lhs: WorkspaceRole, rhs: WorkspaceRole) -> Bool { lhs.rank < rhs.rank }
}

/// A shared workspace: integrations that belong to a team rather than to one user.
public struct Organization: Sendable, Equatable {
    /// Its id, which is also the `owner_id` of its integrations.
    public var id: UUID
    public var name: String
    public var createdAt: Date
    public var updatedAt: Date

    /// Creates an organization value.
    public init(id: UUID, name: String, createdAt: Date, updatedAt: Date) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// One member of an organization.
public struct Member: Sendable, Equatable {
    public var userID: UUID
    /// The member's sign-in email, if they have one.
    public var email: String?
    public var role: WorkspaceRole
    public var joinedAt: Date
    /// Joined through an invitation with an account made after it was sent: the role counts only once an owner or
    /// admin confirms the member (email addresses are not verified, so the account may not be the invitee's).
    public var pendingConfirmation: Bool

    /// Creates a member value.
    public init(userID: UUID, email: String?, role: WorkspaceRole, joinedAt: Date, pendingConfirmation: Bool = false) {
        self.userID = userID
        self.email = email
        self.role = role
        self.joinedAt = joinedAt
        self.pendingConfirmation = pendingConfirmation
    }
}

/// An invitation to join an organization; the `kh_inv_…` token itself is never stored.
public struct Invitation: Sendable, Equatable {
    /// Where an invitation stands.
    public enum State: String, Sendable, CaseIterable {
        case pending
        case accepted
        case revoked
        case expired

        /// Why an invitation in this state cannot be accepted (the `gone` error's message); nil while pending.
        public var refusal: String? {
            switch self {
            case .pending: nil
            case .accepted: "This invitation has already been used."
            case .revoked: "This invitation was withdrawn."
            case .expired: "This invitation has expired; ask for a new one."
            }
        }
    }

    public var id: UUID
    public var organizationID: UUID
    /// The only email that can accept it (compared case-insensitively).
    public var email: String
    public var role: WorkspaceRole
    public var createdAt: Date
    public var expiresAt: Date
    public var acceptedAt: Date?
    public var revokedAt: Date?

    /// Creates an invitation value.
    public init(
        id: UUID, organizationID: UUID, email: String, role: WorkspaceRole, createdAt: Date, expiresAt: Date,
        acceptedAt: Date?, revokedAt: Date?
    ) {
        self.id = id
        self.organizationID = organizationID
        self.email = email
        self.role = role
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.acceptedAt = acceptedAt
        self.revokedAt = revokedAt
    }

    /// Where it stands at `now`.
    public func state(now: Date = Date()) -> State {
        if acceptedAt != nil { return .accepted }
        if revokedAt != nil { return .revoked }
        return expiresAt <= now ? .expired : .pending
    }

    /// How long an invitation can be accepted.
    public static let lifetime: TimeInterval = 7 * 86400
}

/// Organizations, their members and invitations. Every change is audited in its own transaction, with the
/// organization as the event's workspace.
public protocol OrganizationStore: Sendable {
    /// The caller's role in a workspace: `owner` of their personal workspace (its id is theirs), their membership's
    /// role in an organization, nil anywhere else (including a workspace that does not exist).
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func role(of userID: UUID, in workspaceID: UUID) async throws -> WorkspaceRole?

    /// Creates an organization with `userID` as its first owner.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func create(name: String, by userID: UUID, actor: AuditActor) async throws -> Organization

    /// The organizations the user belongs to, with their role, by name.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func list(userID: UUID) async throws -> [(Organization, WorkspaceRole)]

    /// One organization.
    ///
    /// - Throws: `KeyhavenError.notFound` if it does not exist.
    func get(id: UUID) async throws -> Organization

    /// Renames an organization.
    ///
    /// - Throws: `KeyhavenError.notFound` if it does not exist.
    func rename(id: UUID, to name: String, actor: AuditActor) async throws -> Organization

    /// Deletes an organization, its memberships, invitations and service tokens, and its integrations with every
    /// secret version, in one transaction; `confirmation` must equal its name.
    ///
    /// - Throws: `KeyhavenError.notFound`; `.conflict` if the confirmation does not name it.
    func delete(id: UUID, confirmation: String, actor: AuditActor) async throws

    /// The members, by email.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func members(of organizationID: UUID) async throws -> [Member]

    /// Changes a member's role. The last owner cannot be demoted; `allowOwners` false (an admin acting) refuses
    /// any change that involves the owner role.
    ///
    /// - Throws: `KeyhavenError.notFound` (no such member), `.forbidden` (an owner's role, or to owner, without
    ///   `allowOwners`), `.conflict` (the last owner).
    func setRole(
        _ role: WorkspaceRole, of userID: UUID, in organizationID: UUID, allowOwners: Bool, actor: AuditActor
    ) async throws -> Member

    /// Removes a member (or lets one leave). The last owner cannot leave or be removed.
    ///
    /// - Throws: `KeyhavenError.notFound`, `.forbidden` (an owner, without `allowOwners`), `.conflict` (the last
    ///   owner).
    func remove(_ userID: UUID, from organizationID: UUID, allowOwners: Bool, actor: AuditActor) async throws

    /// Creates an invitation for `email` and `role`; the returned token is shown once.
    ///
    /// - Throws: `KeyhavenError.conflict` if that email already belongs to a member.
    func invite(
        email: String, role: WorkspaceRole, to organizationID: UUID, actor: AuditActor, now: Date
    ) async throws -> (token: String, invitation: Invitation)

    /// The organization's pending invitations, newest first.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func invitations(of organizationID: UUID, now: Date) async throws -> [Invitation]

    /// Revokes a pending invitation.
    ///
    /// - Throws: `KeyhavenError.notFound` if there is no pending invitation with this id in the organization.
    func revokeInvitation(id: UUID, in organizationID: UUID, actor: AuditActor) async throws

    /// Accepts an invitation for `user`, whose email must be the invited one; returns the membership. An account
    /// made after the invitation joins pending an owner's or admin's confirmation (``Member/pendingConfirmation``).
    ///
    /// - Throws: `KeyhavenError.notFound` (no such token), `.forbidden` (another email), `.gone` (accepted,
    ///   revoked or expired), `.conflict` (already a member).
    func accept(token: String, user: User, actor: AuditActor, now: Date) async throws -> (Organization, Member)

    /// Confirms a member who joined pending confirmation; their role counts from now on, audited.
    ///
    /// - Throws: `KeyhavenError.notFound` if the user has no membership waiting for confirmation there,
    ///   `.forbidden` for an owner's membership without `allowOwners`.
    func confirm(_ userID: UUID, in organizationID: UUID, allowOwners: Bool, actor: AuditActor) async throws -> Member
}
