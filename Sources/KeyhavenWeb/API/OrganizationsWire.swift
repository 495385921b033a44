import Foundation
import KeyhavenCore
import KeyhavenServices

// The wire types of /api/orgs and /api/invitations (SPEC §12).

/// `POST /api/orgs` and `PATCH /api/orgs/{id}`: `{name}`.
struct OrganizationNameRequest: RequestBody {
    static let knownFields: Set<String>? = ["name"]

    var name: Input<String>?

    func validated(_ errors: FieldErrors) -> Result<String, FieldErrors> {
        var errors = errors
        let name = TextRule.text(name, "name", required: true, maximumLength: 100, errors: &errors)
        guard errors.isEmpty, let name else { return .failure(errors) }
        return .success(name)
    }
}

/// A role as sent: one of owner, admin, member, viewer.
enum RoleRule {
    static func role(_ input: Input<String>?, errors: inout FieldErrors) -> WorkspaceRole? {
        guard let input else {
            errors["role"] = "is required"
            return nil
        }
        guard let role = input.value.flatMap(WorkspaceRole.init(rawValue:)) else {
            errors["role"] = "must be one of owner, admin, member, viewer"
            return nil
        }
        return role
    }
}

/// `PATCH /api/orgs/{id}/members/{user_id}`: `{role}`.
struct MemberRoleRequest: RequestBody {
    static let knownFields: Set<String>? = ["role"]

    var role: Input<String>?

    func validated(_ errors: FieldErrors) -> Result<WorkspaceRole, FieldErrors> {
        var errors = errors
        let role = RoleRule.role(role, errors: &errors)
        guard errors.isEmpty, let role else { return .failure(errors) }
        return .success(role)
    }
}

/// `POST /api/orgs/{id}/invitations`: `{email, role}`.
struct CreateInvitationRequest: RequestBody {
    static let knownFields: Set<String>? = ["email", "role"]

    var email: Input<String>?
    var role: Input<String>?

    func validated(_ errors: FieldErrors) -> Result<(email: String, role: WorkspaceRole), FieldErrors> {
        var errors = errors
        // The rules of sign-up's email, so anyone who could sign up can be invited.
        var email = TextRule.text(self.email, "email", required: true, maximumLength: 254, errors: &errors)
        if let text = email {
            if Accounts.isEmail(text) {
                email = text.lowercased()
            } else {
                errors["email"] = "must be an email address"
            }
        }
        let role = RoleRule.role(role, errors: &errors)
        guard errors.isEmpty, let email, let role else { return .failure(errors) }
        return .success((email, role))
    }
}

/// `POST /api/invitations/accept`: `{token}`.
struct AcceptInvitationRequest: RequestBody {
    static let knownFields: Set<String>? = ["token"]

    var token: Input<String>?

    func validated(_ errors: FieldErrors) -> Result<String, FieldErrors> {
        var errors = errors
        // The token is looked up by its hash; its shape is checked only so nonsense gets a field error.
        let text = token?.value ?? ""
        let body = text.utf8.dropFirst(7)
        guard text.hasPrefix("kh_inv_"), body.count == 43,
            body.allSatisfy({ $0.isBase64URL })
        else {
            errors["token"] = token == nil ? "is required" : "must be an invitation token (kh_inv_…)"
            return .failure(errors)
        }
        guard errors.isEmpty else { return .failure(errors) }
        return .success(text)
    }
}

extension UInt8 {
    /// A character of the base64url alphabet.
    fileprivate var isBase64URL: Bool {
        switch self {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
            true
        default: false
        }
    }
}

/// An organization, with the caller's role in it.
struct OrganizationResponse: ResponseBody {
    let organization: Organization
    let role: WorkspaceRole

    var json: JSONValue {
        .object([
            "id": wireID(organization.id),
            "name": .string(organization.name),
            "role": .string(role.rawValue),
            "created_at": wireDate(organization.createdAt),
            "updated_at": wireDate(organization.updatedAt),
        ])
    }
}

/// `GET /api/orgs`.
struct OrganizationListResponse: ResponseBody {
    let organizations: [(Organization, WorkspaceRole)]

    var json: JSONValue {
        .object([
            "organizations": .array(organizations.map { OrganizationResponse(organization: $0.0, role: $0.1).json })
        ])
    }
}

/// One member.
struct MemberResponse: ResponseBody {
    let member: Member

    var json: JSONValue {
        .object([
            "user_id": wireID(member.userID),
            "email": member.email.map(JSONValue.string) ?? .null,
            "role": .string(member.role.rawValue),
            "joined_at": wireDate(member.joinedAt),
            "pending_confirmation": .bool(member.pendingConfirmation),
        ])
    }
}

/// `GET /api/orgs/{id}/members`.
struct MemberListResponse: ResponseBody {
    let members: [Member]

    var json: JSONValue { .object(["members": .array(members.map { MemberResponse(member: $0).json })]) }
}

/// One invitation; never its token.
struct InvitationResponse: ResponseBody {
    let invitation: Invitation

    var json: JSONValue {
        .object([
            "id": wireID(invitation.id),
            "email": .string(invitation.email),
            "role": .string(invitation.role.rawValue),
            "state": .string(invitation.state().rawValue),
            "created_at": wireDate(invitation.createdAt),
            "expires_at": wireDate(invitation.expiresAt),
        ])
    }
}

/// `GET /api/orgs/{id}/invitations`.
struct InvitationListResponse: ResponseBody {
    let invitations: [Invitation]

    var json: JSONValue {
        .object(["invitations": .array(invitations.map { InvitationResponse(invitation: $0).json })])
    }
}

/// `POST /api/orgs/{id}/invitations`: the invitation and, this once, its token and the link that carries it. The
/// token travels in the link's fragment, which browsers never send to a server or a log.
struct CreatedInvitationResponse: ResponseBody {
    let invitation: Invitation
    let token: String

    var json: JSONValue {
        .object([
            "invitation": InvitationResponse(invitation: invitation).json,
            "token": .string(token),
            "accept_path": .string("/invitations/accept#\(token)"),
        ])
    }
}

/// `POST /api/invitations/accept`: the organization joined and the new membership.
struct AcceptedInvitationResponse: ResponseBody {
    let organization: Organization
    let member: Member

    var json: JSONValue {
        .object([
            "organization": OrganizationResponse(organization: organization, role: member.role).json,
            "member": MemberResponse(member: member).json,
        ])
    }
}
