import Foundation
import HTTPTypes
import Hummingbird
import JWTKit
import KeyhavenCore
import KeyhavenServices

/// Finds out who is calling: a bearer token (personal, service, or an external HS256 JWT) or a session cookie.
///
/// A presented bearer token that is not valid answers 401 at once; a cookie that names no live session is treated
/// as no cookie. For session requests that change state, the `X-CSRF-Token` header must match the session's (the
/// web pages' forms carry the token in a field instead, which their handlers check).
///
/// The API uses both; the web pages use the session cookie alone (``init(sessions:cookieName:)``), and never look
/// at an `Authorization` header.
public struct AuthenticationMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext

    /// What bearer tokens are checked against; nil where only the session cookie counts.
    struct Bearer: Sendable {
        let tokens: any TokenStore
        let users: any UserStore
        let jwt: ExternalJWTVerifier?
    }

    let sessions: any SessionStore
    let bearer: Bearer?
    let cookieName: String

    /// Creates the middleware for bearer tokens and the session cookie.
    public init(
        sessions: any SessionStore, tokens: any TokenStore, users: any UserStore, jwt: ExternalJWTVerifier?,
        cookieName: String
    ) {
        self.sessions = sessions
        self.bearer = Bearer(tokens: tokens, users: users, jwt: jwt)
        self.cookieName = cookieName
    }

    /// Creates the middleware for the session cookie alone.
    package init(sessions: any SessionStore, cookieName: String) {
        self.sessions = sessions
        self.bearer = nil
        self.cookieName = cookieName
    }

    public func handle(
        _ request: Request, context: AppRequestContext, next: (Request, AppRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        if let bearer, let authorization = request.headers[.authorization] {
            context.identity = try await bearer.identity(authorization)
        } else if let (session, user) = try await session(of: request) {
            context.identity = .user(user, via: .session(session))
            if ![.get, .head, .options].contains(request.method) {
                let presented = request.headers[Self.csrfHeader] ?? ""
                context.csrfSatisfied = constantTimeEquals(presented, session.csrfToken)
            }
        }
        return try await next(request, context)
    }

    /// The live session the request's cookie names, with its user; nil without one.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    package func session(of request: Request) async throws -> (Session, User)? {
        guard let token = request.cookies[cookieName]?.value, !token.isEmpty, token.utf8.count <= 256 else {
            return nil
        }
        return try await sessions.find(token: token)
    }

    /// The header that carries the CSRF token.
    public static let csrfHeader = HTTPField.Name("X-CSRF-Token")!
}

extension AuthenticationMiddleware.Bearer {
    /// The identity a presented `Authorization` header proves.
    ///
    /// - Throws: `KeyhavenError.unauthenticated` for anything but a valid bearer token.
    func identity(_ authorization: String) async throws -> Identity {
        guard authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else {
            throw KeyhavenError.unauthenticated
        }
        // Blanks around the token are spaces or tabs (RFC 9110 OWS); anything else stays and fails to match.
        var presented = authorization.dropFirst(7)
        while let first = presented.first, first == " " || first == "\t" { presented.removeFirst() }
        while let last = presented.last, last == " " || last == "\t" { presented.removeLast() }
        let token = String(presented)
        if token.hasPrefix("kh_pat_") || token.hasPrefix("kh_svc_") {
            guard let (record, user) = try await tokens.authenticate(token: token) else {
                throw KeyhavenError.unauthenticated
            }
            switch record.kind {
            case .service:
                return .service(record)
            case .personal:
                guard let user else { throw KeyhavenError.unauthenticated }
                return .user(user, via: .personalToken(record))
            }
        }
        guard let jwt, let claims = await jwt.verify(token) else { throw KeyhavenError.unauthenticated }
        return .user(
            try await users.findOrCreate(externalSubject: claims.subject, email: claims.email), via: .externalJWT)
    }
}

package func constantTimeEquals(_ lhs: String, _ rhs: String) -> Bool {
    let (a, b) = (Array(lhs.utf8), Array(rhs.utf8))
    guard a.count == b.count, !a.isEmpty else { return false }
    return zip(a, b).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
}

/// Verifies Supabase-style HS256 JWTs: the signature, `exp`, `nbf` when present, and the configured `iss` and
/// `aud`, which every token must carry.
public struct ExternalJWTVerifier: Sendable {
    let keys: JWTKeyCollection
    let issuer: String
    let audience: String

    /// The claims Keyhaven uses.
    public struct Claims: Sendable {
        public var subject: String
        public var email: String?
    }

    struct Payload: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim
        var aud: AudienceClaim
        var email: String?

        func verify(using algorithm: some JWTAlgorithm) async throws {
            try exp.verifyNotExpired()
            try nbf?.verifyNotBefore()
        }
    }

    /// Creates a verifier for tokens signed with `secret`, issued by `issuer` for `audience`.
    public init(secret: String, issuer: String, audience: String) async {
        keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        self.issuer = issuer
        self.audience = audience
    }

    /// The claims of a valid token, or nil for any invalid one (bad signature, expired, wrong issuer or audience).
    public func verify(_ token: String) async -> Claims? {
        guard let payload = try? await keys.verify(token, as: Payload.self), payload.iss.value == issuer,
            (try? payload.aud.verifyIntendedAudience(includes: audience)) != nil
        else { return nil }
        let subject = payload.sub.value
        guard !subject.isEmpty, subject.utf8.count <= 256 else { return nil }
        return Claims(subject: subject, email: payload.email)
    }
}
