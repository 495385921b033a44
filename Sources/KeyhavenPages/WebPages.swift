import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices
import KeyhavenWeb

/// The server-rendered web interface of SPEC §9: sign-in and sign-up, the integrations list, the new-integration
/// form, an integration's detail page, the audit log and personal tokens. Every form works without JavaScript;
/// a session's forms carry its CSRF token in a hidden field, and a signed-out reader's forms (sign-in, sign-up, the
/// language switch) a token bound to a cookie (double submit).
public struct WebPages: Sendable {
    /// The services the pages use: the same the JSON API calls, so a page decides nothing of its own.
    public struct Services: Sendable {
        public var accounts: Accounts
        /// Sessions, which the pages' authentication reads from the cookie.
        public var sessions: any SessionStore
        public var integrations: IntegrationService
        public var organizations: OrganizationService
        public var usage: UsageService
        public var audit: AuditService

        /// Groups the services.
        public init(
            accounts: Accounts, sessions: any SessionStore, integrations: IntegrationService,
            organizations: OrganizationService, usage: UsageService, audit: AuditService
        ) {
            self.accounts = accounts
            self.sessions = sessions
            self.integrations = integrations
            self.organizations = organizations
            self.usage = usage
            self.audit = audit
        }
    }

    let services: Services
    let renderer: PageRenderer
    let cookie: SessionCookie
    let trustedProxies: Set<String>
    let publicURL: URL
    let reader: PageReader

    /// Creates the pages; `publicURL` is where users reach the server, for links they copy.
    public init(
        services: Services, renderer: PageRenderer, cookie: SessionCookie, trustedProxies: Set<String>, publicURL: URL
    ) {
        self.publicURL = publicURL
        self.services = services
        self.renderer = renderer
        self.cookie = cookie
        self.trustedProxies = trustedProxies
        self.reader = PageReader(
            localization: renderer.localization, sessions: services.sessions, organizations: services.organizations,
            cookie: cookie)
    }

    /// Adds the pages and their static files to the router. The pages find their reader with the same
    /// authentication middleware as the API (the session cookie alone), and a failure goes to ``ErrorPages``.
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
        pages.add(middleware: reader.authentication)
        pages.get(
            "/",
            use: open { _, _, page in
                Response.redirect(to: page.viewer == nil ? "/login" : "/integrations", type: .found)
            })
        let signIn = SignInPages(services: services, renderer: renderer, cookie: cookie)
        pages.get("/login", use: open(signIn.loginPage))
        pages.post("/login", use: open(signIn.login))
        pages.get("/signup", use: open(signIn.signupPage))
        pages.post("/signup", use: open(signIn.signup))
        pages.post("/logout", use: signedIn(signIn.logout))
        pages.post("/language", use: open(signIn.changeLanguage))
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
    func open(_ body: @escaping @Sendable (Request, AppRequestContext, PageRequest) async throws -> Response) -> Handler
    {
        { request, context in
            let page = try await reader.page(request, identity: context.identity)
            let response = try await failing(as: page) { try await body(request, context, page) }
            return page.settingFormCookie(on: response, cookie: cookie)
        }
    }

    /// A page for a signed-in reader; anyone else is sent to sign in.
    func signedIn(
        _ body: @escaping @Sendable (Request, AppRequestContext, PageRequest, Viewer) async throws -> Response
    ) -> Handler {
        { request, context in
            let page = try await reader.page(request, identity: context.identity)
            guard let viewer = page.viewer else {
                let next = request.method == .get ? "/login?next=\(Self.percentEncoded(page.path))" : "/login"
                return Response.redirect(to: next, type: .normal)
            }
            return try await failing(as: page) { try await body(request, context, page, viewer) }
        }
    }

    /// Runs a page handler; a failure carries the page's reader to the error page (``ErrorPages``).
    private func failing(as page: PageRequest, _ body: () async throws -> Response) async throws -> Response {
        do {
            return try await body()
        } catch {
            throw PageFailure(error: error, page: page)
        }
    }

    /// A signed-in reader's form, refused (403) unless it carries the session's CSRF token.
    static func form(_ request: Request, context: AppRequestContext, viewer: Viewer) async throws -> Form {
        let form = try await Form.read(request, context: context)
        guard constantTimeEquals(form["csrf_token"] ?? "", viewer.session.csrfToken) else { throw FormTokenRefused() }
        return form
    }

    /// `text` if it is a path on this site (`/…`, not `//…` or a scheme), else nil: redirects never leave the site.
    static func localPath(_ text: String?) -> String? {
        guard let text, text.hasPrefix("/"), !text.hasPrefix("//"), !text.contains("\\"), text.utf8.count <= 512,
            text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
        else { return nil }
        return text
    }

    /// `text` with everything but letters and digits percent-encoded, for a value inside a URL's query.
    static func percentEncoded(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
    }
}
