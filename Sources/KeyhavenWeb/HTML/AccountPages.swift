import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices

/// The audit log and the personal access tokens pages.
struct AccountPages: Sendable {
    let services: WebPages.Services
    let renderer: PageRenderer

    static let pageSize = 50

    @Sendable func audit(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        // A workspace's trail: in an organization, owners and admins see every event, members and viewers those of
        // its integrations.
        let workspace = try IntegrationPages.workspace(request.uri.queryParameters["workspace"].map(String.init), viewer: viewer)
        let role = try await services.access.require(.view, in: workspace, for: viewer.user)
        let before = request.uri.queryParameters["before"].flatMap { Cursor.decodeSeq(String($0)) }
        let events = try await services.audit.events(
            ownerID: workspace, integrationID: nil,
            integrationsOnly: !WorkspaceAccess.allows(role, .viewAllAudit, in: workspace), limit: Self.pageSize + 1,
            before: before)
        let shown = Array(events.prefix(Self.pageSize))
        let integrations = try await services.integrations.list(ownerID: workspace, limit: 200, after: nil)
        let names = Dictionary(integrations.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
        var values: [String: Any] = [
            "nav_audit": true,
            "events": shown.map { Self.event($0, names: names, language: page.language) },
            "empty": shown.isEmpty,
            "workspace_id": IntegrationPages.idText(workspace),
        ]
        let path = workspace == viewer.user.id ? "/audit?" : "/audit?workspace=\(IntegrationPages.idText(workspace))&"
        if events.count > Self.pageSize, let last = shown.last { values["older"] = "\(path)before=\(Cursor.encode(last.seq))" }
        return renderer.page(
            "audit", title: page.language.text("audit_title"), values: values, language: page.language, viewer: viewer,
            path: page.path)
    }

    @Sendable func tokens(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        var values: [String: Any] = [:]
        if request.uri.queryParameters["done"] == "revoked" { values["flash"] = page.language.text("revoked_flash") }
        return try await tokensPage(page: page, viewer: viewer, values: values)
    }

    @Sendable func createToken(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        var errors: [String: String] = [:]
        let name = IntegrationPages.validName(form["name"])
        if name == nil { errors["name"] = "must be a non-empty string of at most 100 visible characters" }
        let scopes = Set(form.values("scopes").compactMap(TokenScope.init(rawValue:)).filter { $0 != .credentialsRead })
        if scopes.isEmpty { errors["scopes"] = "choose at least one" }
        var expiresAt: Date?
        if let text = form.trimmed("expires_in_days") {
            if let days = Int(text), (1...365).contains(days) {
                expiresAt = Date().addingTimeInterval(Double(days) * 86400)
            } else {
                errors["expires_in_days"] = "must be a whole number of days from 1 to 365"
            }
        }
        guard errors.isEmpty, let name else {
            return try await tokensPage(
                page: page, viewer: viewer,
                values: ["errors": errors.mapValues { page.language.problem($0) }, "values": ["name": form["name"] ?? ""]],
                status: .unprocessableContent)
        }
        let (secret, _) = try await services.tokens.create(
            kind: .personal, userID: viewer.user.id, name: name, scopes: scopes, expiresAt: expiresAt,
            audit: AuditEntry(actor: IntegrationPages.actor(request, context: context, viewer: viewer), action: .tokenCreate, ownerID: viewer.user.id))
        return try await tokensPage(page: page, viewer: viewer, values: ["created_token": secret])
    }

    @Sendable func revokeToken(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws -> Response {
        let id = try UUID.path(context)
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        try await services.tokens.revoke(
            id: id, userID: viewer.user.id,
            audit: AuditEntry(actor: IntegrationPages.actor(request, context: context, viewer: viewer), action: .tokenRevoke, ownerID: viewer.user.id))
        return Response.redirect(to: "/tokens?done=revoked", type: .normal)
    }

    private func tokensPage(page: PageRequest, viewer: Viewer, values: [String: Any], status: HTTPResponse.Status = .ok) async throws -> Response {
        let tokens = try await services.tokens.list(userID: viewer.user.id).filter { $0.kind == .personal }
        var values = values
        values["nav_tokens"] = true
        values["empty"] = tokens.isEmpty
        values["tokens"] = tokens.map { token in
            var row: [String: Any] = [
                "id": IntegrationPages.idText(token.id), "name": token.name,
                "scopes": token.scopes.map(\.rawValue).sorted().joined(separator: ", "),
                "created": page.language.relative(token.createdAt),
                "last_used": token.lastUsedAt.map { page.language.relative($0) } ?? page.language.text("never"),
                "live": token.revokedAt == nil && (token.expiresAt.map { $0 > Date() } ?? true),
            ]
            if let expires = token.expiresAt { row["expires"] = IntegrationPages.iso(expires) }
            return row
        }
        return renderer.page(
            "tokens", title: page.language.text("tokens_title"), values: values, language: page.language, viewer: viewer,
            path: page.path, status: status)
    }

    /// One audit event as a table row: when, what, by whom, on which integration, and how it ended.
    static func event(_ event: AuditEvent, names: [UUID: String], language: Language) -> [String: Any] {
        var row: [String: Any] = [
            "action": event.action,
            "action_label": language.action(event.action),
            "outcome": event.outcome,
            "outcome_label": language.text("outcome_\(event.outcome)"),
            "actor": language.text("actor_\(event.actorType)"),
            "when_iso": event.at,
        ]
        let date = (try? Date(event.at, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
            ?? (try? Date(event.at, strategy: .iso8601))
        if let date {
            row["when"] = language.relative(date)
        } else {
            row["when"] = event.at
        }
        if let id = event.integrationID {
            row["integration_id"] = IntegrationPages.idText(id)
            row["integration_name"] = names[id] ?? String(IntegrationPages.idText(id).prefix(8))
            row["integration_exists"] = names[id] != nil
        }
        return row
    }
}
