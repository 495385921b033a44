import Hummingbird
import KeyhavenCore

/// The request context of every Keyhaven route: who is calling, from where, and whether a session request
/// carried its CSRF token.
public struct AppRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `AuthenticationMiddleware`; nil for anonymous requests.
    public var identity: Identity?
    /// The peer's IP address.
    public var clientAddress: String?
    /// False only for a state-changing request made with a session cookie and without the matching CSRF token.
    public var csrfSatisfied = true

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.clientAddress = source.channel.remoteAddress?.ipAddress
    }

    /// Request bodies are limited to 64 KiB (SPEC §6).
    public var maxUploadSize: Int { 64 * 1024 }

    /// The actor for audit events of a caller not yet signed in.
    public func anonymousActor(_ request: Request) -> AuditActor {
        AuditActor(kind: .user, id: nil, ip: clientAddress, userAgent: request.headers[.userAgent])
    }
}

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

/// The context of routes for users: the user is always there.
public struct UserContext: ChildRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The authenticated user.
    public let user: User
    /// How they authenticated.
    public let credential: UserCredential
    /// The peer's IP address.
    public let clientAddress: String?

    /// - Throws: 401 without an identity, 403 for service tokens and for session requests missing their CSRF
    ///   token.
    public init(context: AppRequestContext) throws {
        switch context.identity {
        case nil:
            throw KeyhavenError.unauthenticated
        case .service:
            throw KeyhavenError.forbidden("Service tokens cannot use this route.")
        case .user(let user, let credential):
            guard context.csrfSatisfied else {
                throw KeyhavenError.forbidden("A valid CSRF token (X-CSRF-Token header) is required.")
            }
            self.coreContext = context.coreContext
            self.user = user
            self.credential = credential
            self.clientAddress = context.clientAddress
        }
    }

    /// Requires `scope` of a personal access token; sessions and external JWTs hold every user scope.
    ///
    /// - Throws: `KeyhavenError.forbidden` if the token lacks the scope.
    public func require(_ scope: TokenScope) throws {
        if case .personalToken(let token) = credential, !token.scopes.contains(scope) {
            throw KeyhavenError.forbidden("This token lacks the \(scope.rawValue) scope.")
        }
    }

    /// Requires a browser session or an external JWT: a token that could mint tokens would outlive its own
    /// scopes.
    ///
    /// - Throws: `KeyhavenError.forbidden` for a personal access token.
    public func requireInteractive() throws {
        if case .personalToken = credential {
            throw KeyhavenError.forbidden("Personal access tokens cannot manage tokens; sign in instead.")
        }
    }

    /// The actor for audit events.
    public func actor(_ request: Request) -> AuditActor {
        AuditActor(
            kind: .user, id: user.id.lowercasedText, ip: clientAddress,
            userAgent: request.headers[.userAgent])
    }

    public var maxUploadSize: Int { 64 * 1024 }
}

/// The context of the backend-only credentials route: the service token is always there.
public struct ServiceContext: ChildRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The service token.
    public let token: APIToken
    /// The peer's IP address.
    public let clientAddress: String?

    /// - Throws: 401 without an identity; 403 for users (sessions, personal tokens, JWTs) and for service
    ///   tokens without `credentials:read`.
    public init(context: AppRequestContext) throws {
        switch context.identity {
        case nil:
            throw KeyhavenError.unauthenticated
        case .user:
            throw KeyhavenError.forbidden("Only service tokens can read credentials.")
        case .service(let token):
            guard token.scopes.contains(.credentialsRead) else {
                throw KeyhavenError.forbidden("This token lacks the credentials:read scope.")
            }
            self.coreContext = context.coreContext
            self.token = token
            self.clientAddress = context.clientAddress
        }
    }

    /// The actor for audit events.
    public func actor(_ request: Request) -> AuditActor {
        AuditActor(
            kind: .service, id: token.id.lowercasedText, ip: clientAddress,
            userAgent: request.headers[.userAgent])
    }
}
