import Foundation
import KeyhavenCore
import KeyhavenWeb

/// The reader's organizations, and the form that creates one.
struct OrganizationsPage: Sendable {
    let organizations: [OrganizationBadge]
    let empty: Bool
    let flash: Notice?
    let errors: FieldMessages
    let values: FormValues
}

/// What an action on an organization's page adds to it when it answers with the page.
struct OrganizationAddition: Sendable {
    var flash: Notice? = nil
    /// An invitation just made: its link is shown once.
    var invitation: CreatedInvitation? = nil
    /// A service token just made, shown once.
    var createdToken: String? = nil
    var membersError: String? = nil
    var inviteError: String? = nil
    /// The email the refused invitation form shows again.
    var inviteEmail = ""
    var tokenError: String? = nil
    var renameError: String? = nil
    var deleteError: String? = nil
}

/// An invitation just made.
struct CreatedInvitation: Sendable {
    let link: String
    let email: String
}

/// An organization's page: its members and roles, invitations, service tokens, renaming and deletion. Each control
/// shows only to a role that may use it.
struct OrganizationPage: Sendable {
    let org: OrganizationBadge
    let canManageMembers: Bool
    let canManageTokens: Bool
    let canAdminister: Bool
    let members: [MemberRow]
    let inviteRoles: [Choice]
    let invitations: [InvitationRow]
    let tokens: [TokenRow]
    let flash: Notice?
    let invitation: CreatedInvitation?
    let createdToken: String?
    let membersError: String?
    let inviteError: String?
    let inviteEmail: String
    let tokenError: String?
    let renameError: String?
    let deleteError: String?

    init(
        org: OrganizationBadge, canManageMembers: Bool, canManageTokens: Bool, canAdminister: Bool,
        members: [MemberRow], inviteRoles: [Choice], invitations: [InvitationRow], tokens: [TokenRow],
        addition: OrganizationAddition
    ) {
        self.org = org
        self.canManageMembers = canManageMembers
        self.canManageTokens = canManageTokens
        self.canAdminister = canAdminister
        self.members = members
        self.inviteRoles = inviteRoles
        self.invitations = invitations
        self.tokens = tokens
        flash = addition.flash
        invitation = addition.invitation
        createdToken = addition.createdToken
        membersError = addition.membersError
        inviteError = addition.inviteError
        inviteEmail = addition.inviteEmail
        tokenError = addition.tokenError
        renameError = addition.renameError
        deleteError = addition.deleteError
    }
}

/// A member of an organization, with what the reader may do about them.
struct MemberRow: Sendable {
    let userID: String
    let email: String
    let role: String
    /// Whether this is the reader.
    let me: Bool
    let canChange: Bool
    let canRemove: Bool
    let canLeave: Bool
    /// Whether they joined with an account newer than the invitation and await confirmation.
    let pending: Bool
    let canConfirm: Bool
    let roles: [Choice]

    init(
        _ member: Member, mine: Bool, manageMembers: Bool, manageOwners: Bool, roles: [WorkspaceRole], texts: Texts
    ) {
        // Owners are changed only by owners; anyone may leave (the last owner is refused by the store).
        let changeable = manageMembers && (manageOwners || member.role != .owner)
        userID = IntegrationPages.idText(member.userID)
        email = member.email ?? "—"
        role = texts.role(member.role)
        me = mine
        canChange = changeable && !mine
        canRemove = changeable && !mine
        canLeave = mine
        pending = member.pendingConfirmation
        canConfirm = changeable && member.pendingConfirmation
        self.roles = roles.map { Choice(value: $0.rawValue, label: texts.role($0), selected: $0 == member.role) }
    }
}

/// A pending invitation.
struct InvitationRow: Sendable {
    let id: String
    let email: String
    let role: String
    let expires: String
}

/// The page an invitation link opens.
struct AcceptPage: Sendable {
    let error: String?
}
