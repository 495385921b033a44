import Hummingbird
import KeyhavenCore
import KeyhavenServices
import NIOCore

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
    /// The event loop of the caller's connection (the gateway prefers provider connections living there).
    public let eventLoop: any EventLoop

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.clientAddress = source.channel.remoteAddress?.ipAddress
        self.eventLoop = source.channel.eventLoop
    }

    /// Request bodies are limited to 64 KiB (SPEC §6).
    public var maxUploadSize: Int { 64 * 1024 }

    /// The actor for audit events of a caller not yet signed in.
    public func anonymousActor(_ request: Request) -> AuditActor {
        AuditActor(kind: .user, id: nil, ip: clientAddress, userAgent: request.headers[.userAgent])
    }
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

    /// The caller as the services see them, with the actor of their audit events.
    public func caller(_ request: Request) -> UserCaller {
        UserCaller(user: user, credential: credential, ip: clientAddress, userAgent: request.headers[.userAgent])
    }

    /// Requires `scope` of a personal access token (see ``UserCaller/require(_:)``).
    ///
    /// - Throws: `KeyhavenError.forbidden` if the token lacks the scope.
    public func require(_ scope: TokenScope) throws {
        try UserCaller.require(scope, of: credential)
    }

    /// Requires a browser session or an external JWT (see ``UserCaller/requireInteractive()``).
    ///
    /// - Throws: `KeyhavenError.forbidden` for a personal access token.
    public func requireInteractive() throws {
        try UserCaller.requireInteractive(credential)
    }

    /// The actor for audit events.
    public func actor(_ request: Request) -> AuditActor { caller(request).actor }

    public var maxUploadSize: Int { 64 * 1024 }
}
