import Foundation
import KeyhavenCore

/// Who is calling.
public enum Identity: Sendable {
    /// A user, by session, personal access token, or external JWT.
    case user(User, via: UserCredential)
    /// The application backend, by service token.
    case service(APIToken)
}

/// How a user authenticated.
public enum UserCredential: Sendable {
    case session(Session)
    case personalToken(APIToken)
    case externalJWT
}

/// A signed-in user as the services see them: who they are, what their credential allows, and the actor their
/// actions are audited under.
public struct UserCaller: Sendable {
    /// The user.
    public let user: User
    /// How they authenticated.
    public let credential: UserCredential
    /// The actor of their audit events.
    public let actor: AuditActor

    /// Creates the caller.
    public init(user: User, credential: UserCredential, ip: String?, userAgent: String?) {
        self.user = user
        self.credential = credential
        self.actor = AuditActor(kind: .user, id: user.id.lowercasedText, ip: ip, userAgent: userAgent)
    }

    /// Requires `scope` of a personal access token; sessions and external JWTs hold every user scope.
    ///
    /// - Throws: `KeyhavenError.forbidden` if the token lacks the scope.
    public func require(_ scope: TokenScope) throws { try Self.require(scope, of: credential) }

    /// Requires `scope` of `credential` (see ``require(_:)``).
    ///
    /// - Throws: `KeyhavenError.forbidden` if it is a token lacking the scope.
    public static func require(_ scope: TokenScope, of credential: UserCredential) throws {
        if case .personalToken(let token) = credential, !token.scopes.contains(scope) {
            throw KeyhavenError.forbidden("This token lacks the \(scope.rawValue) scope.")
        }
    }

    /// Requires a browser session or an external JWT: a token that could mint tokens would outlive its own
    /// scopes.
    ///
    /// - Throws: `KeyhavenError.forbidden` for a personal access token.
    public func requireInteractive() throws { try Self.requireInteractive(credential) }

    /// Requires that `credential` is not a personal access token (see ``requireInteractive()``).
    ///
    /// - Throws: `KeyhavenError.forbidden` for a personal access token.
    public static func requireInteractive(_ credential: UserCredential) throws {
        if case .personalToken = credential {
            throw KeyhavenError.forbidden("Personal access tokens cannot manage tokens; sign in instead.")
        }
    }
}
