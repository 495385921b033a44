import Foundation

/// The one authorization rule of Keyhaven (SPEC §12): who may do what in which workspace. Every route asks it;
/// no handler checks a role of its own.
public enum Policy {
    /// What a caller wants to do in a workspace.
    public enum Action: String, Sendable, CaseIterable {
        /// See the workspace: its integrations and their status, its members, the audit events of its integrations.
        case view
        /// Create, edit, test, rotate, disable or delete the workspace's integrations, or move one in.
        case editIntegrations
        /// Move an integration out of the workspace. Wherever it lands, the mover may read it there, so this takes
        /// the role that may already read the workspace's credentials (by minting a service token): admin.
        case moveIntegrationsOut
        /// Read decrypted credentials (service tokens only).
        case readCredentials
        /// Use an integration through the gateway, or report its usage, without reading it (service tokens only).
        case useIntegration
        /// See every audit event of the workspace (membership changes, invitations, tokens).
        case viewAllAudit
        /// Invite, change and remove members other than owners; list and revoke invitations.
        case manageMembers
        /// Make, unmake or remove owners, or invite one.
        case manageOwners
        /// Create, list and revoke the organization's service tokens.
        case manageServiceTokens
        /// Set budgets and rate limits of the workspace and its integrations.
        case manageBudgets
        /// Rename or delete the organization.
        case administer
    }

    /// Who is asking.
    public enum Caller: Sendable, Equatable {
        /// A user, with their role in the workspace (nil: not a member, or a workspace that does not exist).
        case user(WorkspaceRole?)
        /// A service token, scoped to one workspace or (nil) to all of them.
        case service(workspace: UUID?)
    }

    /// The answer.
    public enum Decision: Sendable, Equatable {
        case allowed
        /// The caller may not even know the workspace or its object exists: answered as not found (404).
        case hidden
        /// The caller can see it but not do this: answered as forbidden (403).
        case forbidden
    }

    /// The least role that may take each action; nil for actions users never take.
    static func leastRole(for action: Action) -> WorkspaceRole? {
        switch action {
        case .view: .viewer
        case .editIntegrations: .member
        case .viewAllAudit, .manageMembers, .manageServiceTokens, .manageBudgets, .moveIntegrationsOut: .admin
        case .manageOwners, .administer: .owner
        case .readCredentials, .useIntegration: nil
        }
    }

    /// Decides whether `caller` may take `action` in `workspace`.
    public static func decide(_ caller: Caller, _ action: Action, in workspace: UUID) -> Decision {
        switch caller {
        case .service(let scope):
            guard action == .readCredentials || action == .useIntegration else { return .forbidden }
            guard let scope else { return .allowed }
            return scope == workspace ? .allowed : .hidden
        case .user(nil):
            return .hidden
        case .user(let role?):
            guard let least = leastRole(for: action) else { return .forbidden }
            return role >= least ? .allowed : .forbidden
        }
    }

    /// Throws the error for a decision other than `.allowed`.
    ///
    /// - Throws: `KeyhavenError.notFound` when hidden, `.forbidden` when forbidden.
    public static func require(_ caller: Caller, _ action: Action, in workspace: UUID) throws {
        switch decide(caller, action, in: workspace) {
        case .allowed: return
        case .hidden: throw KeyhavenError.notFound
        case .forbidden: throw KeyhavenError.forbidden(forbiddenMessage(action))
        }
    }

    /// The sentence a caller gets when their role does not allow `action`.
    public static func forbiddenMessage(_ action: Action) -> String {
        switch action {
        case .view: "Your role does not allow viewing this workspace."
        case .editIntegrations: "Your role in this workspace does not allow changing integrations."
        case .moveIntegrationsOut:
            "Only owners and admins move integrations out of the "
                + "organization: elsewhere their credentials could be read."
        case .readCredentials: "Only service tokens can read credentials."
        case .useIntegration: "Only service tokens can use integrations through the gateway."
        case .viewAllAudit: "Only owners and admins see all of the organization's events."
        case .manageMembers: "Only owners and admins manage members and invitations."
        case .manageOwners: "Only owners manage owners."
        case .manageServiceTokens: "Only owners and admins manage the organization's service tokens."
        case .manageBudgets: "Only owners and admins set budgets and rate limits."
        case .administer: "Only owners rename or delete the organization."
        }
    }
}
