import Crypto
import Foundation
import Hummingbird
import KeyhavenCore
import Mustache

/// The static files of the interface (one stylesheet, one script), served under names that carry a hash of their
/// content, so they can be cached for a year and still change with each release.
struct StaticAsset: Sendable {
    let name: String
    let contentType: String
    let bytes: ByteBuffer

    init(file: URL, contentType: String) throws {
        let data = try Data(contentsOf: file)
        let hash = Hex.encode(Array(SHA256.hash(data: data))).prefix(12)
        let base = file.deletingPathExtension().lastPathComponent
        self.name = "\(base).\(hash).\(file.pathExtension)"
        self.contentType = contentType
        self.bytes = ByteBuffer(bytes: data)
    }
}

/// Renders the server-side pages: the Mustache templates of `Resources/Templates`, every page inside the same
/// layout, in the reader's language.
public struct PageRenderer: Sendable {
    let library: MustacheLibrary
    let stylesheet: StaticAsset
    let script: StaticAsset

    /// Loads the templates and the static files bundled with the module.
    ///
    /// - Throws: `KeyhavenError.configuration` when they are missing next to the executable or do not parse.
    public init() async throws {
        guard let templates = Bundle.module.url(forResource: "Templates", withExtension: nil),
            let assets = Bundle.module.url(forResource: "Public", withExtension: nil)
        else {
            throw KeyhavenError.configuration("the web interface's files (keyhaven_KeyhavenWeb.resources) are missing next to the executable")
        }
        do {
            library = try await MustacheLibrary(directory: templates.path)
            stylesheet = try StaticAsset(file: assets.appendingPathComponent("app.css"), contentType: "text/css; charset=utf-8")
            script = try StaticAsset(file: assets.appendingPathComponent("app.js"), contentType: "text/javascript; charset=utf-8")
        } catch {
            throw KeyhavenError.configuration("the web interface's files could not be loaded: \(type(of: error))")
        }
    }

    /// The asset with this file name, if it is one of ours.
    func asset(named name: String) -> StaticAsset? {
        [stylesheet, script].first { $0.name == name }
    }

    /// A whole page: `template` inside the layout, with the common values (texts, assets, the signed-in user and
    /// CSRF token, the language switch) added to `values`. The language switch is a form like the others: it
    /// carries the session's CSRF token, or for a signed-out reader `formToken`; without either it is left out.
    func page(
        _ template: String, title: String, values: [String: Any], language: Language, viewer: Viewer?,
        path: String, status: HTTPResponse.Status = .ok, formToken: String? = nil
    ) -> Response {
        var context = values
        context["t"] = language.texts
        context["title"] = title
        context["css"] = "/static/\(stylesheet.name)"
        context["js"] = "/static/\(script.name)"
        context["here"] = path
        context["languages"] = Language.allCases.map { option in
            ["code": option.rawValue, "label": option == .es ? "Español" : "English", "current": option == language] as [String: Any]
        }
        if let viewer {
            context["language_form"] = ["field": "csrf_token", "token": viewer.session.csrfToken]
        } else if let formToken {
            context["language_form"] = ["field": "form_token", "token": formToken]
        }
        if let viewer {
            context["viewer"] = ["email": viewer.user.email ?? "", "csrf": viewer.session.csrfToken] as [String: Any]
            // The workspace switcher: the personal workspace, then each organization; the page names the current one.
            let current = (values["workspace_id"] as? String).flatMap(UUID.init(text:))
            var workspaces: [[String: Any]] = [
                ["name": language.text("personal_workspace"), "href": "/integrations", "current": current == viewer.user.id]
            ]
            for (organization, role) in viewer.organizations {
                workspaces.append([
                    "name": organization.name, "role": language.text("role_\(role.rawValue)"),
                    "href": "/integrations?workspace=\(organization.id.lowercasedText)",
                    "current": current == organization.id,
                ])
            }
            context["workspaces"] = workspaces
            context["current_workspace"] = current.flatMap { viewer.workspaceName($0, language: language) }
        }
        let html = library.render(context, withTemplate: template) ?? ""
        return Self.html(html, status: status)
    }

    /// A piece of a page (an integration card) for the status script to swap in.
    func fragment(_ template: String, values: [String: Any], language: Language, viewer: Viewer) -> Response {
        var context = values
        context["t"] = language.texts
        context["viewer"] = ["csrf": viewer.session.csrfToken]
        return Self.html(library.render(context, withTemplate: template) ?? "", status: .ok)
    }

    static func html(_ text: String, status: HTTPResponse.Status) -> Response {
        Response(
            status: status,
            headers: [.contentType: "text/html; charset=utf-8", .vary: "Accept-Language, Cookie"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// The error page for a failed page request, in the reader's language.
    func errorPage(
        _ error: KeyhavenError, language: Language, viewer: Viewer?, path: String, formToken: String? = nil
    ) -> Response {
        let (titleKey, bodyKey): (String, String) =
            switch error {
            case .notFound: ("not_found_title", "not_found_body")
            case .forbidden: ("forbidden_title", "forbidden_body")
            case .rateLimited: ("error_title", "rate_limited")
            default: ("error_title", "error_body")
            }
        var response = page(
            "error", title: language.text(titleKey),
            values: ["heading": language.text(titleKey), "message": language.text(bodyKey)],
            language: language, viewer: viewer, path: path, status: error.status, formToken: formToken)
        if case .rateLimited(let seconds) = error { response.headers[.retryAfter] = String(seconds) }
        return response
    }
}
