import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices
import KeyhavenWeb

/// Sign-in, sign-up, sign-out and the language switch: the forms a signed-out reader can use, each with a token
/// bound to a cookie (double submit).
struct SignInPages: Sendable {
    let services: WebPages.Services
    let renderer: PageRenderer
    let cookie: SessionCookie

    @Sendable func loginPage(
        _ request: Request, context: AppRequestContext, page: PageRequest
    ) async throws -> Response {
        if page.viewer != nil { return Response.redirect(to: "/integrations", type: .normal) }
        let next = WebPages.localPath(request.uri.queryParameters["next"].map(String.init)) ?? ""
        return loginForm(LoginPage(formToken: page.formToken ?? "", next: next, email: "", error: nil), page: page)
    }

    @Sendable func signupPage(
        _ request: Request, context: AppRequestContext, page: PageRequest
    ) async throws -> Response {
        if page.viewer != nil { return Response.redirect(to: "/integrations", type: .normal) }
        return signupForm(
            SignupPage(formToken: page.formToken ?? "", email: "", closed: !services.accounts.allowSignup), page: page)
    }

    @Sendable func login(_ request: Request, context: AppRequestContext, page: PageRequest) async throws -> Response {
        let form = try await anonymousFormBody(request, context: context)
        let email = form.trimmed("email") ?? ""
        let password = form["password"] ?? ""
        let next = WebPages.localPath(form["next"]) ?? "/integrations"
        func again(_ key: String) -> LoginPage {
            LoginPage(formToken: page.formToken ?? "", next: next, email: email, error: page.texts[key])
        }
        do {
            guard !email.isEmpty, !password.isEmpty, email.utf8.count <= 254, !password.utf8.contains(0) else {
                throw KeyhavenError.invalidLogin
            }
            let signedIn = try await services.accounts.logIn(
                email: email, password: password, actor: context.anonymousActor(request))
            return startSession(signedIn, to: next)
        } catch KeyhavenError.invalidLogin {
            return loginForm(again("invalid_login"), page: page, status: .unauthorized)
        } catch KeyhavenError.rateLimited(let seconds) {
            return retrying(after: seconds, loginForm(again("rate_limited"), page: page, status: .tooManyRequests))
        }
    }

    @Sendable func signup(_ request: Request, context: AppRequestContext, page: PageRequest) async throws -> Response {
        let form = try await anonymousFormBody(request, context: context)
        let email = form.trimmed("email")
        let password = form["password"].flatMap { $0.isEmpty ? nil : $0 }
        var view = SignupPage(
            formToken: page.formToken ?? "", email: email ?? "", closed: !services.accounts.allowSignup)
        do {
            let signedIn = try await services.accounts.signUp(
                email: email, password: form["password"].flatMap { $0.isEmpty ? nil : $0 },
                actor: context.anonymousActor(request))
            return startSession(signedIn, to: "/integrations")
        } catch KeyhavenError.validationFailed(let problems) {
            view.errors = FieldMessages(Self.problems(problems, email: email, password: password), texts: page.texts)
            return signupForm(view, page: page, status: .unprocessableContent)
        } catch KeyhavenError.conflict {
            view.errors = FieldMessages(["email": page.texts["email_taken"]])
            return signupForm(view, page: page, status: .conflict)
        } catch KeyhavenError.rateLimited(let seconds) {
            view.error = page.texts["rate_limited"]
            return retrying(after: seconds, signupForm(view, page: page, status: .tooManyRequests))
        } catch KeyhavenError.forbidden {
            view.error = page.texts["signup_closed"]
            return signupForm(view, page: page, status: .forbidden)
        }
    }

    /// The coded problems of a refused sign-up: the accounts' rules (a missing field, an email's shape, the
    /// password policy) checked again, so that each problem carries its code.
    static func problems(_ refused: [String: String], email: String?, password: String?) -> [String: FieldProblem] {
        var rules = FieldErrors()
        switch email {
        case nil: rules.add(.required, to: "email")
        case let email? where !Accounts.isEmail(email.lowercased()): rules.add(.email, to: "email")
        default: break
        }
        switch password {
        case nil: rules.add(.required, to: "password")
        case let password?: if let problem = PasswordPolicy.check(password) { rules.add(problem, to: "password") }
        }
        return FieldErrors.coding(refused, with: rules)
    }

    @Sendable func logout(
        _ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer
    ) async throws -> Response {
        _ = try await WebPages.form(request, context: context, viewer: viewer)
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
    @Sendable func changeLanguage(
        _ request: Request, context: AppRequestContext, page: PageRequest
    ) async throws -> Response {
        let form =
            if let viewer = page.viewer {
                try await WebPages.form(request, context: context, viewer: viewer)
            } else {
                try await anonymousFormBody(request, context: context)
            }
        guard let language = form["lang"].flatMap(Language.init(rawValue:)) else {
            throw KeyhavenError.badRequest("Unknown language.")
        }
        var response = Response.redirect(to: WebPages.localPath(form["next"]) ?? "/", type: .normal)
        response.setCookie(
            Cookie(
                name: Language.cookieName, value: language.rawValue, maxAge: 365 * 86400, path: "/",
                secure: cookie.secure, httpOnly: true, sameSite: .lax))
        return response
    }

    private func startSession(_ signedIn: Accounts.SignedIn, to next: String) -> Response {
        var response = Response.redirect(to: next, type: .normal)
        response.setCookie(cookie.cookie(signedIn.token))
        response.setCookie(cookie.formCookie(nil))
        return response
    }

    private func retrying(after seconds: Int, _ response: Response) -> Response {
        var response = response
        response.headers[.retryAfter] = String(seconds)
        return response
    }

    private func loginForm(_ view: LoginPage, page: PageRequest, status: HTTPResponse.Status = .ok) -> Response {
        renderer.page("login", view, title: page.texts["sign_in"], for: page, status: status)
    }

    private func signupForm(_ view: SignupPage, page: PageRequest, status: HTTPResponse.Status = .ok) -> Response {
        renderer.page("signup", view, title: page.texts["sign_up"], for: page, status: status)
    }

    /// A signed-out reader's form, refused (403) unless it carries the token of its form cookie.
    private func anonymousFormBody(_ request: Request, context: AppRequestContext) async throws -> Form {
        let form = try await Form.read(request, context: context)
        guard let expected = request.cookies[cookie.formName]?.value, expected.utf8.count == 43,
            constantTimeEquals(form["form_token"] ?? "", expected)
        else { throw FormTokenRefused() }
        return form
    }
}

/// The sign-in page.
struct LoginPage: Sendable {
    let formToken: String
    /// Where to go once signed in.
    let next: String
    let email: String
    let error: String?
}

/// The sign-up page.
struct SignupPage: Sendable {
    let formToken: String
    let email: String
    /// Whether sign-up is closed on this server.
    let closed: Bool
    var error: String? = nil
    var errors = FieldMessages.none
}
