import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices
import KeyhavenWeb

/// The integrations list of a workspace, and one integration's card.
extension IntegrationPages {
    @Sendable func list(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws
        -> Response
    {
        let workspace = try Self.workspace(request.uri.queryParameters["workspace"].map(String.init), viewer: viewer)
        let cursor = request.uri.queryParameters["cursor"].flatMap { Cursor.decode(String($0)) }
        let (shown, next, role) = try await services.integrations.list(
            in: workspace, by: viewer.caller(request, context), limit: 100, after: cursor)
        let canEdit = WorkspaceAccess.allows(role, .editIntegrations, in: workspace)
        let listPath = Self.listPath(workspace, viewer: viewer)
        let separator = listPath.contains("?") ? "&" : "?"
        let warned = try await services.usage.budgetWarnings(among: shown)
        let view = IntegrationListPage(
            cards: shown.map { integration in
                var card = IntegrationCard(integration, texts: page.texts, canEdit: canEdit)
                card.budgetWarning = warned.contains(integration.id)
                return card
            },
            empty: shown.isEmpty && cursor == nil,
            workspaceName: viewer.workspaceName(workspace, texts: page.texts) ?? "",
            organization: workspace == viewer.user.id
                ? nil
                : OrganizationBadge(
                    id: Self.idText(workspace), name: viewer.workspaceName(workspace, texts: page.texts) ?? "",
                    role: page.texts.role(role)),
            canEdit: canEdit,
            newPath: workspace == viewer.user.id
                ? "/integrations/new" : "/integrations/new?workspace=\(Self.idText(workspace))",
            nextPage: next.map { "\(listPath)\(separator)cursor=\(Cursor.encode($0))" },
            firstPage: cursor == nil ? nil : listPath,
            flash: Self.flash(request, texts: page.texts))
        return renderer.page(
            "integrations", view, title: page.texts["integrations_title"], for: page, section: .integrations,
            workspace: workspace)
    }

    @Sendable func card(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws
        -> Response
    {
        let target = try await permit(request, context, viewer, .view)
        let integration = target.integration
        let canEdit = WorkspaceAccess.allows(target.role, .editIntegrations, in: integration.ownerID)
        let card = IntegrationCard(integration, texts: page.texts, canEdit: canEdit)
        return renderer.fragment("card_fragment", card, for: page)
    }

    /// The workspace a list or a form is for (`?workspace=`, or a form's `workspace` field): the reader's personal
    /// one when absent; anything that is not an id is not found.
    static func workspace(_ text: String?, viewer: Viewer) throws -> UUID {
        guard let text, !text.isEmpty else { return viewer.user.id }
        guard let id = UUID(text: text) else { throw KeyhavenError.notFound }
        return id
    }

    /// The form value that keeps an organization's workspace across the new-integration pages (none for the
    /// personal one, whose links stay as they were).
    static func workspaceField(_ workspace: UUID, viewer: Viewer) -> [String: String] {
        workspace == viewer.user.id ? [:] : ["workspace": idText(workspace)]
    }

    /// The integrations list of a workspace, with a flash message to show (`done`) if given.
    static func listPath(_ workspace: UUID, viewer: Viewer, done: String? = nil) -> String {
        let path = workspace == viewer.user.id ? "/integrations" : "/integrations?workspace=\(idText(workspace))"
        guard let done else { return path }
        return path + (path.contains("?") ? "&" : "?") + "done=\(done)"
    }
}

/// The integrations list of a workspace.
struct IntegrationListPage: Sendable {
    let cards: [IntegrationCard]
    /// Whether the workspace has no integration at all (not merely none on this page).
    let empty: Bool
    let workspaceName: String
    /// The organization the list belongs to, with the reader's role; nil for the personal workspace.
    let organization: OrganizationBadge?
    let canEdit: Bool
    let newPath: String
    let nextPage: String?
    let firstPage: String?
    let flash: Notice?
}

/// An organization and the reader's role in it.
struct OrganizationBadge: Sendable {
    let id: String
    let name: String
    let role: String
}
