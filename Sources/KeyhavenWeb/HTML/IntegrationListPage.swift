import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices
import KeyhavenGateway

/// The integrations list of a workspace, and one integration's card.
extension IntegrationPages {
    @Sendable func list(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let workspace = try Self.workspace(request.uri.queryParameters["workspace"].map(String.init), viewer: viewer)
        let role = try await services.access.require(.view, in: workspace, for: viewer.user)
        let canEdit = WorkspaceAccess.allows(role, .editIntegrations, in: workspace)
        let cursor = request.uri.queryParameters["cursor"].flatMap { Cursor.decode(String($0)) }
        let found = try await services.integrations.list(ownerID: workspace, limit: 101, after: cursor)
        let shown = Array(found.prefix(100))
        let listPath = Self.listPath(workspace, viewer: viewer)
        let separator = listPath.contains("?") ? "&" : "?"
        let warned = try await budgetWarnings(shown)
        var values: [String: Any] = [
            "cards": shown.map { integration in
                var card = Self.card(integration, language: page.language, canEdit: canEdit)
                card["budget_warning"] = warned.contains(integration.id)
                return card
            },
            "empty": shown.isEmpty && cursor == nil,
            "nav_integrations": true,
            "workspace_id": Self.idText(workspace),
            "workspace_name": viewer.workspaceName(workspace, language: page.language) ?? "",
            "can_edit": canEdit,
            "new_path": workspace == viewer.user.id ? "/integrations/new" : "/integrations/new?workspace=\(Self.idText(workspace))",
        ]
        if workspace != viewer.user.id {
            values["organization"] = ["id": Self.idText(workspace), "role": page.language.text("role_\(role.rawValue)")]
        }
        if found.count > 100, let last = shown.last { values["next_page"] = "\(listPath)\(separator)cursor=\(Cursor.encode(last.id))" }
        if cursor != nil { values["first_page"] = listPath }
        values["flash"] = Self.flash(request, language: page.language)
        return renderer.page(
            "integrations", title: page.language.text("integrations_title"), values: values, language: page.language,
            viewer: viewer, path: page.path)
    }

    /// Which of `integrations` have spent at least the warning share of their monthly budget: one query for the
    /// limits, then one per integration that has a budget.
    private func budgetWarnings(_ integrations: [Integration]) async throws -> Set<UUID> {
        let limits = try await services.limits.limits(for: integrations.map(\.id))
        var warned: Set<UUID> = []
        for integration in integrations where limits[integration.id]?.monthlyBudgetMicros != nil {
            let standing = try await services.budgets.standing(subject: integration.id, ownerID: integration.ownerID)
            if standing.warning { warned.insert(integration.id) }
        }
        return warned
    }

    @Sendable func card(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let (integration, role) = try await integration(context, viewer, .view)
        let canEdit = WorkspaceAccess.allows(role, .editIntegrations, in: integration.ownerID)
        return renderer.fragment(
            "card", values: Self.card(integration, language: page.language, canEdit: canEdit), language: page.language,
            viewer: viewer)
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
