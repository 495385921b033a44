import Crypto
import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenWeb
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
/// layout, in the reader's language. Each page hands the template one value of its own view type (`…Page`), which
/// the template reads through its stored properties; the layout around it is a ``LayoutView``.
public struct PageRenderer: Sendable {
    let library: MustacheLibrary
    let stylesheet: StaticAsset
    let script: StaticAsset
    /// The interface's texts, read once here.
    let localization: Localization

    /// Loads the templates, the texts and the static files bundled with the module.
    ///
    /// - Throws: `KeyhavenError.configuration` when they are missing next to the executable or do not parse.
    public init() async throws {
        guard let templates = Bundle.module.url(forResource: "Templates", withExtension: nil),
            let assets = Bundle.module.url(forResource: "Public", withExtension: nil)
        else {
            throw KeyhavenError.configuration(
                "the web interface's files (keyhaven_KeyhavenPages.resources) are missing next to the executable")
        }
        localization = try Localization.bundled()
        do {
            library = try await MustacheLibrary(directory: templates.path)
            stylesheet = try StaticAsset(
                file: assets.appendingPathComponent("app.css"), contentType: "text/css; charset=utf-8")
            script = try StaticAsset(
                file: assets.appendingPathComponent("app.js"), contentType: "text/javascript; charset=utf-8")
        } catch {
            throw KeyhavenError.configuration("the web interface's files could not be loaded: \(type(of: error))")
        }
    }

    /// The asset with this file name, if it is one of ours.
    func asset(named name: String) -> StaticAsset? {
        [stylesheet, script].first { $0.name == name }
    }

    /// A whole page: `template` reads `content` under `page`, inside the layout. The language switch is a form
    /// like the others: it carries the session's CSRF token, or for a signed-out reader the page's form token.
    func page<Content: Sendable>(
        _ template: String, _ content: Content, title: String, for page: PageRequest, section: Section = .none,
        workspace: UUID? = nil, status: HTTPResponse.Status = .ok
    ) -> Response {
        let view = LayoutView(
            t: page.texts, title: title, css: "/static/\(stylesheet.name)", js: "/static/\(script.name)",
            here: page.path,
            languages: Language.allCases.map {
                LanguageOption(code: $0.rawValue, label: $0.ownName, current: $0 == page.language)
            },
            languageForm: page.viewer.map { HiddenField(name: "csrf_token", value: $0.session.csrfToken) }
                ?? page.formToken.map { HiddenField(name: "form_token", value: $0) },
            viewer: page.viewer.map { ViewerView($0, workspace: workspace, texts: page.texts) },
            nav: Navigation(section), page: content)
        return Self.html(library.render(view, withTemplate: template) ?? "", status: status)
    }

    /// A piece of a page (an integration card) for the status script to swap in.
    func fragment<Content: Sendable>(_ template: String, _ content: Content, for page: PageRequest) -> Response {
        let view = FragmentView(
            t: page.texts, viewer: page.viewer.map { CSRFView(csrf: $0.session.csrfToken) }, page: content)
        return Self.html(library.render(view, withTemplate: template) ?? "", status: .ok)
    }

    static func html(_ text: String, status: HTTPResponse.Status) -> Response {
        Response(
            status: status,
            headers: [.contentType: "text/html; charset=utf-8", .vary: "Accept-Language, Cookie"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// The part of the site a page belongs to, for the navigation to mark.
enum Section: Sendable {
    case integrations, usage, audit, tokens, organizations, none
}

/// The layout around every page: the head, the header with the navigation, the reader and the workspace
/// switcher, and the foot with the language switch. The page itself is ``page``.
struct LayoutView<Content: Sendable>: Sendable {
    let t: Texts
    let title: String
    let css: String
    let js: String
    /// Where the language switch comes back to.
    let here: String
    let languages: [LanguageOption]
    /// The language switch's token field; nil leaves the switch out.
    let languageForm: HiddenField?
    let viewer: ViewerView?
    let nav: Navigation
    let page: Content
}

/// The root of a fragment: the texts, the reader's CSRF token for its forms, and the fragment itself.
struct FragmentView<Content: Sendable>: Sendable {
    let t: Texts
    let viewer: CSRFView?
    let page: Content
}

/// A session's CSRF token, as the forms of a fragment read it (`{{viewer.csrf}}`).
struct CSRFView: Sendable {
    let csrf: String
}

/// One language of the switch.
struct LanguageOption: Sendable {
    let code: String
    let label: String
    let current: Bool
}

/// A hidden form field.
struct HiddenField: Sendable {
    let name: String
    let value: String
}

/// Which part of the site the navigation marks as current.
struct Navigation: Sendable {
    let integrations: Bool
    let usage: Bool
    let audit: Bool
    let tokens: Bool
    let organizations: Bool

    init(_ section: Section) {
        integrations = section == .integrations
        usage = section == .usage
        audit = section == .audit
        tokens = section == .tokens
        organizations = section == .organizations
    }
}

/// The signed-in reader in the header: who they are, their sign-out form's token, and the workspace switcher.
struct ViewerView: Sendable {
    let email: String
    let csrf: String
    let workspaces: [WorkspaceLink]
    /// The name of the workspace the page shows, if it shows one.
    let currentWorkspace: String?

    init(_ viewer: Viewer, workspace current: UUID?, texts: Texts) {
        email = viewer.user.email ?? ""
        csrf = viewer.session.csrfToken
        // The personal workspace, then each organization; the page names the current one.
        let personal = WorkspaceLink(
            name: texts["personal_workspace"], role: nil, href: "/integrations", current: current == viewer.user.id)
        workspaces =
            [personal]
            + viewer.organizations.map { organization, role in
                WorkspaceLink(
                    name: organization.name, role: texts.role(role),
                    href: "/integrations?workspace=\(organization.id.lowercasedText)",
                    current: current == organization.id)
            }
        currentWorkspace = current.flatMap { viewer.workspaceName($0, texts: texts) }
    }
}

/// A workspace in the switcher.
struct WorkspaceLink: Sendable {
    let name: String
    let role: String?
    let href: String
    let current: Bool
}
