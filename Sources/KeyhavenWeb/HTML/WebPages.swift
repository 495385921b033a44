import Crypto
import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices
import KeyhavenGateway
import Logging

/// The signed-in reader of a page, with the organizations they belong to (for the workspace switcher).
struct Viewer: Sendable {
    let user: User
    let session: Session
    let organizations: [(Organization, WorkspaceRole)]

    /// The name of a workspace the reader belongs to, if they do.
    func workspaceName(_ id: UUID, language: Language) -> String? {
        id == user.id ? language.text("personal_workspace") : organizations.first { $0.0.id == id }?.0.name
    }
}

/// What every page handler knows about its request.
struct PageRequest: Sendable {
    let language: Language
    /// The path and query, for the language switch to come back to.
    let path: String
    let viewer: Viewer?
    /// A signed-out reader's form token (nil for a signed-in one, whose forms carry the session's CSRF token): the
    /// form cookie's, or a new one that the response sets.
    var formToken: String? = nil
    /// Whether `formToken` is new, so the response must set the form cookie.
    var setsFormCookie = false
}

/// The server-rendered web interface of SPEC §9: sign-in and sign-up, the integrations list, the new-integration
/// form, an integration's detail page, the audit log and personal tokens. Every form works without JavaScript;
/// a session's forms carry its CSRF token in a hidden field, and a signed-out reader's forms (sign-in, sign-up, the
/// language switch) a token bound to a cookie (double submit).
public struct WebPages: Sendable {
    /// The services the pages use.
    public struct Services: Sendable {
        public var accounts: Accounts
        public var sessions: any SessionStore
        public var integrations: any IntegrationStore
        public var secrets: any SecretStore
        public var audit: any AuditLog
        public var tokens: any TokenStore
        public var tester: any IntegrationTester
        public var limiter: any RateLimiter
        public var checks: CheckRateLimit
        public var rotations: any RotationStore
        public var organizations: any OrganizationStore
        public var access: WorkspaceAccess
        public var usage: any UsageStore
        public var limits: any LimitStore
        public var budgets: Budgets

        /// Groups the services.
        public init(
            accounts: Accounts, sessions: any SessionStore, integrations: any IntegrationStore, secrets: any SecretStore,
            audit: any AuditLog, tokens: any TokenStore, tester: any IntegrationTester, limiter: any RateLimiter,
            checks: CheckRateLimit, rotations: any RotationStore, organizations: any OrganizationStore,
            access: WorkspaceAccess, usage: any UsageStore, limits: any LimitStore, budgets: Budgets
        ) {
            self.usage = usage
            self.limits = limits
            self.budgets = budgets
            self.organizations = organizations
            self.access = access
            self.rotations = rotations
            self.accounts = accounts
            self.sessions = sessions
            self.integrations = integrations
            self.secrets = secrets
            self.audit = audit
            self.tokens = tokens
            self.tester = tester
            self.limiter = limiter
            self.checks = checks
        }
    }

    let services: Services
    let renderer: PageRenderer
    let cookie: SessionCookie
    let trustedProxies: Set<String>
    let publicURL: URL

    /// Creates the pages; `publicURL` is where users reach the server, for links they copy.
    public init(
        services: Services, renderer: PageRenderer, cookie: SessionCookie, trustedProxies: Set<String>, publicURL: URL
    ) {
        self.publicURL = publicURL
        self.services = services
        self.renderer = renderer
        self.cookie = cookie
        self.trustedProxies = trustedProxies
    }

    /// Adds the pages and their static files to the router.
    public func addRoutes(to router: Router<AppRequestContext>) {
        router.get("/static/:file") { _, context in
            guard let name = context.parameters.get("file"), let asset = renderer.asset(named: name) else {
                throw KeyhavenError.notFound
            }
            return Response(
                status: .ok,
                headers: [.contentType: asset.contentType, .cacheControl: "public, max-age=31536000, immutable"],
                body: .init(byteBuffer: asset.bytes))
        }
        let pages = router.group()
        pages.add(middleware: ClientAddressMiddleware(trustedProxies: trustedProxies))
        pages.get("/", use: open { _, _, page in
            Response.redirect(to: page.viewer == nil ? "/login" : "/integrations", type: .found)
        })
        pages.get("/login", use: open(loginPage))
        pages.post("/login", use: open(login))
        pages.get("/signup", use: open(signupPage))
        pages.post("/signup", use: open(signup))
        pages.post("/logout", use: signedIn(logout))
        pages.post("/language", use: open(changeLanguage))
        let integrations = IntegrationPages(services: services, renderer: renderer)
        pages.get("/integrations", use: signedIn(integrations.list))
        pages.get("/integrations/new", use: signedIn(integrations.newForm))
        pages.post("/integrations", use: signedIn(integrations.create))
        pages.get("/integrations/:id", use: signedIn(integrations.detail))
        pages.get("/integrations/:id/card", use: signedIn(integrations.card))
        pages.post("/integrations/:id/test", use: signedIn(integrations.test))
        pages.post("/integrations/:id/credentials", use: signedIn(integrations.replace))
        pages.post("/integrations/:id/rename", use: signedIn(integrations.rename))
        pages.post("/integrations/:id/enable", use: signedIn(integrations.enable))
        pages.post("/integrations/:id/disable", use: signedIn(integrations.disable))
        pages.post("/integrations/:id/rotation", use: signedIn(integrations.setRotation))
        pages.post("/integrations/:id/rotate", use: signedIn(integrations.rotate))
        pages.get("/integrations/:id/delete", use: signedIn(integrations.deletePage))
        pages.post("/integrations/:id/delete", use: signedIn(integrations.delete))
        let usage = UsagePages(services: services, renderer: renderer)
        pages.get("/usage", use: signedIn(usage.page))
        pages.post("/integrations/:id/limits", use: signedIn(usage.setLimits))
        let account = AccountPages(services: services, renderer: renderer)
        pages.get("/audit", use: signedIn(account.audit))
        pages.get("/tokens", use: signedIn(account.tokens))
        pages.post("/tokens", use: signedIn(account.createToken))
        pages.post("/tokens/:id/revoke", use: signedIn(account.revokeToken))
        let organizations = OrganizationPages(services: services, renderer: renderer, publicURL: publicURL)
        pages.get("/orgs", use: signedIn(organizations.list))
        pages.post("/orgs", use: signedIn(organizations.create))
        pages.get("/orgs/:id", use: signedIn(organizations.detail))
        pages.post("/orgs/:id/rename", use: signedIn(organizations.rename))
        pages.post("/orgs/:id/delete", use: signedIn(organizations.delete))
        pages.post("/orgs/:id/members/:user_id/role", use: signedIn(organizations.setRole))
        pages.post("/orgs/:id/members/:user_id/remove", use: signedIn(organizations.removeMember))
        pages.post("/orgs/:id/members/:user_id/confirm", use: signedIn(organizations.confirmMember))
        pages.post("/orgs/:id/invitations", use: signedIn(organizations.invite))
        pages.post("/orgs/:id/invitations/:invitation_id/revoke", use: signedIn(organizations.revokeInvitation))
        pages.post("/orgs/:id/service-tokens", use: signedIn(organizations.createServiceToken))
        pages.post("/orgs/:id/service-tokens/:token_id/revoke", use: signedIn(organizations.revokeServiceToken))
        pages.get("/invitations/accept", use: open(organizations.acceptPage))
        pages.post("/invitations/accept", use: signedIn(organizations.accept))
    }

    typealias Handler = @Sendable (Request, AppRequestContext) async throws -> Response

    /// A page anyone may see; a signed-in reader is recognised.
    func open(_ body: @escaping @Sendable (Request, AppRequestContext, PageRequest) async throws -> Response) -> Handler {
        { request, context in
            let page = try await pageRequest(request, context: context)
            var response = await rendering(errorsOf: page, context: context) { try await body(request, context, page) }
            if page.setsFormCookie, let token = page.formToken, !response.headers[values: .setCookie].contains(where: {
                $0.hasPrefix(cookie.formName + "=")
            }) {
                response.setCookie(cookie.formCookie(token))
            }
            return response
        }
    }

    /// A page for a signed-in reader; anyone else is sent to sign in.
    func signedIn(
        _ body: @escaping @Sendable (Request, AppRequestContext, PageRequest, Viewer) async throws -> Response
    ) -> Handler {
        { request, context in
            let page = try await pageRequest(request, context: context)
            guard let viewer = page.viewer else {
                return Response.redirect(to: request.method == .get ? "/login?next=\(Self.escape(page.path))" : "/login", type: .normal)
            }
            return await rendering(errorsOf: page, context: context) { try await body(request, context, page, viewer) }
        }
    }

    private func pageRequest(_ request: Request, context: AppRequestContext) async throws -> PageRequest {
        var viewer: Viewer?
        if let token = request.cookies[cookie.name]?.value, !token.isEmpty, token.utf8.count <= 256,
            let (session, user) = try await services.sessions.find(token: token)
        {
            viewer = Viewer(user: user, session: session, organizations: try await services.organizations.list(userID: user.id))
        }
        let language = Language.negotiate(
            cookie: request.cookies[Language.cookieName]?.value, acceptLanguage: request.headers[.acceptLanguage])
        var page = PageRequest(language: language, path: Self.localPath(request.uri.description) ?? "/", viewer: viewer)
        if viewer == nil {
            let existing = request.cookies[cookie.formName]?.value
            page.formToken = existing.flatMap { $0.utf8.count == 43 ? $0 : nil } ?? Self.randomToken()
            page.setsFormCookie = existing != page.formToken
        }
        return page
    }

    /// Runs a page handler; a domain error becomes the error page in the reader's language, anything else a 500
    /// page and a log line naming only the error's type.
    private func rendering(
        errorsOf page: PageRequest, context: AppRequestContext, _ body: () async throws -> Response
    ) async -> Response {
        do {
            return try await body()
        } catch let error as KeyhavenError {
            return renderer.errorPage(
                error, language: page.language, viewer: page.viewer, path: page.path, formToken: page.formToken)
        } catch {
            context.logger.error("page failed", metadata: ["error_type": "\(type(of: error))"])
            return renderer.errorPage(
                .internalError, language: page.language, viewer: page.viewer, path: page.path, formToken: page.formToken)
        }
    }

    // MARK: Sign-in and sign-up

    @Sendable func loginPage(_ request: Request, context: AppRequestContext, page: PageRequest) async throws -> Response {
        if page.viewer != nil { return Response.redirect(to: "/integrations", type: .normal) }
        return anonymousForm("login", page: page, request: request, values: ["next": Self.localPath(request.uri.queryParameters["next"].map(String.init)) ?? ""])
    }

    @Sendable func signupPage(_ request: Request, context: AppRequestContext, page: PageRequest) async throws -> Response {
        if page.viewer != nil { return Response.redirect(to: "/integrations", type: .normal) }
        return anonymousForm("signup", page: page, request: request, values: ["closed": !services.accounts.allowSignup])
    }

    @Sendable func login(_ request: Request, context: AppRequestContext, page: PageRequest) async throws -> Response {
        let form = try await anonymousFormBody(request, context: context)
        let email = form.trimmed("email") ?? ""
        let password = form["password"] ?? ""
        let next = Self.localPath(form["next"]) ?? "/integrations"
        var values: [String: Any] = ["email": email, "next": next]
        do {
            guard !email.isEmpty, !password.isEmpty, email.utf8.count <= 254, !password.utf8.contains(0) else {
                throw KeyhavenError.invalidLogin
            }
            let signedIn = try await services.accounts.logIn(email: email, password: password, actor: context.anonymousActor(request))
            return startSession(signedIn, to: next)
        } catch KeyhavenError.invalidLogin {
            values["error"] = page.language.text("invalid_login")
            return anonymousForm("login", page: page, request: request, values: values, status: .unauthorized)
        } catch KeyhavenError.rateLimited(let seconds) {
            values["error"] = page.language.text("rate_limited")
            var response = anonymousForm("login", page: page, request: request, values: values, status: .tooManyRequests)
            response.headers[.retryAfter] = String(seconds)
            return response
        }
    }

    @Sendable func signup(_ request: Request, context: AppRequestContext, page: PageRequest) async throws -> Response {
        let form = try await anonymousFormBody(request, context: context)
        let email = form.trimmed("email")
        var values: [String: Any] = ["email": email ?? "", "closed": !services.accounts.allowSignup]
        do {
            let signedIn = try await services.accounts.signUp(
                email: email, password: form["password"].flatMap { $0.isEmpty ? nil : $0 }, actor: context.anonymousActor(request))
            return startSession(signedIn, to: "/integrations")
        } catch KeyhavenError.validationFailed(let problems) {
            values["errors"] = problems.mapValues { page.language.problem($0) }
            return anonymousForm("signup", page: page, request: request, values: values, status: .unprocessableContent)
        } catch KeyhavenError.conflict {
            values["errors"] = ["email": page.language.text("email_taken")]
            return anonymousForm("signup", page: page, request: request, values: values, status: .conflict)
        } catch KeyhavenError.rateLimited(let seconds) {
            values["error"] = page.language.text("rate_limited")
            var response = anonymousForm("signup", page: page, request: request, values: values, status: .tooManyRequests)
            response.headers[.retryAfter] = String(seconds)
            return response
        } catch KeyhavenError.forbidden {
            values["error"] = page.language.text("signup_closed")
            return anonymousForm("signup", page: page, request: request, values: values, status: .forbidden)
        }
    }

    @Sendable func logout(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        _ = try await Self.form(request, context: context, viewer: viewer)
        try await services.accounts.logOut(
            UserCaller(
                user: viewer.user, credential: .session(viewer.session), ip: context.clientAddress,
                userAgent: request.headers[.userAgent]))
        var response = Response.redirect(to: "/login", type: .normal)
        response.setCookie(cookie.expired())
        return response
    }

    /// The language switch: a form like any other, so it needs the session's CSRF token, or a signed-out reader's
    /// form token.
    @Sendable func changeLanguage(_ request: Request, context: AppRequestContext, page: PageRequest) async throws -> Response {
        let form =
            if let viewer = page.viewer {
                try await Self.form(request, context: context, viewer: viewer)
            } else {
                try await anonymousFormBody(request, context: context)
            }
        guard let language = form["lang"].flatMap(Language.init(rawValue:)) else { throw KeyhavenError.badRequest("Unknown language.") }
        var response = Response.redirect(to: Self.localPath(form["next"]) ?? "/", type: .normal)
        response.setCookie(
            Cookie(name: Language.cookieName, value: language.rawValue, maxAge: 365 * 86400, path: "/", secure: cookie.secure,
                   httpOnly: true, sameSite: .lax))
        return response
    }

    private func startSession(_ signedIn: Accounts.SignedIn, to next: String) -> Response {
        var response = Response.redirect(to: next, type: .normal)
        response.setCookie(cookie.cookie(signedIn.token))
        response.setCookie(cookie.formCookie(nil))
        return response
    }

    /// A sign-in or sign-up form with its double-submit token (the page's: the cookie's, or a new one that the
    /// response sets).
    private func anonymousForm(
        _ template: String, page: PageRequest, request: Request, values: [String: Any], status: HTTPResponse.Status = .ok
    ) -> Response {
        var values = values
        values["form_token"] = page.formToken ?? ""
        let title = page.language.text(template == "login" ? "sign_in" : "sign_up")
        return renderer.page(
            template, title: title, values: values, language: page.language, viewer: nil, path: page.path, status: status,
            formToken: page.formToken)
    }

    private func anonymousFormBody(_ request: Request, context: AppRequestContext) async throws -> Form {
        let form = try await Form.read(request, context: context)
        guard let expected = request.cookies[cookie.formName]?.value, expected.utf8.count == 43,
            constantTimeEquals(form["form_token"] ?? "", expected)
        else { throw KeyhavenError.forbidden("The form is missing its token.") }
        return form
    }

    /// A signed-in reader's form, refused (403) unless it carries the session's CSRF token.
    static func form(_ request: Request, context: AppRequestContext, viewer: Viewer) async throws -> Form {
        let form = try await Form.read(request, context: context)
        guard constantTimeEquals(form["csrf_token"] ?? "", viewer.session.csrfToken) else {
            throw KeyhavenError.forbidden("The form is missing its CSRF token.")
        }
        return form
    }

    static func randomToken() -> String {
        Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// `text` if it is a path on this site (`/…`, not `//…` or a scheme), else nil: redirects never leave the site.
    static func localPath(_ text: String?) -> String? {
        guard let text, text.hasPrefix("/"), !text.hasPrefix("//"), !text.contains("\\"), text.utf8.count <= 512,
            text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
        else { return nil }
        return text
    }

    static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
    }
}
