import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices
import KeyhavenWeb

/// The audit log and the personal access tokens pages.
struct AccountPages: Sendable {
    let services: WebPages.Services
    let renderer: PageRenderer

    static let pageSize = 50

    @Sendable func audit(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer) async throws
        -> Response
    {
        // A workspace's trail: in an organization, owners and admins see every event, members and viewers those of
        // its integrations.
        let workspace = try IntegrationPages.workspace(
            request.uri.queryParameters["workspace"].map(String.init), viewer: viewer)
        let caller = viewer.caller(request, context)
        let before = request.uri.queryParameters["before"].flatMap { Cursor.decodeSeq(String($0)) }
        let events = try await services.audit.events(
            in: workspace, integrationID: nil, by: caller, limit: Self.pageSize + 1, before: before)
        let shown = Array(events.prefix(Self.pageSize))
        let (integrations, _, _) = try await services.integrations.list(
            in: workspace, by: caller, limit: 200, after: nil)
        let names = Dictionary(integrations.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
        let path = workspace == viewer.user.id ? "/audit?" : "/audit?workspace=\(IntegrationPages.idText(workspace))&"
        let view = AuditPage(
            events: shown.map { EventRow($0, names: names, texts: page.texts) }, empty: shown.isEmpty,
            older: events.count > Self.pageSize ? shown.last.map { "\(path)before=\(Cursor.encode($0.seq))" } : nil)
        return renderer.page(
            "audit", view, title: page.texts["audit_title"], for: page, section: .audit, workspace: workspace)
    }

    @Sendable func tokens(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let flash = IntegrationPages.flash(request, texts: page.texts, among: ["revoked"])
        return try await tokensPage(
            page: page, caller: viewer.caller(request, context), addition: TokensAddition(flash: flash))
    }

    @Sendable func createToken(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let form = try await WebPages.form(request, context: context, viewer: viewer)
        var errors: [String: FieldProblem] = [:]
        let name = IntegrationPages.validName(form["name"])
        if name == nil { errors["name"] = .name }
        let scopes = Set(form.values("scopes").compactMap(TokenScope.init(rawValue:)).filter { $0 != .credentialsRead })
        if scopes.isEmpty { errors["scopes"] = .chooseOne }
        var expiresAt: Date?
        if let text = form.trimmed("expires_in_days") {
            if let days = Int(text), (1...365).contains(days) {
                expiresAt = Date().addingTimeInterval(Double(days) * 86400)
            } else {
                errors["expires_in_days"] = .expiryDays
            }
        }
        guard errors.isEmpty, let name else {
            return try await tokensPage(
                page: page, caller: viewer.caller(request, context),
                addition: TokensAddition(errors: FieldMessages(errors, texts: page.texts), name: form["name"] ?? ""),
                status: .unprocessableContent)
        }
        let caller = viewer.caller(request, context)
        let (secret, _) = try await services.accounts.createPersonalToken(by: caller) {
            NewToken(name: name, scopes: scopes, expiresAt: expiresAt)
        }
        return try await tokensPage(page: page, caller: caller, addition: TokensAddition(createdToken: secret))
    }

    @Sendable func revokeToken(_ request: Request, context: AppRequestContext, page: PageRequest, viewer: Viewer)
        async throws -> Response
    {
        let id = try UUID.path(context)
        _ = try await WebPages.form(request, context: context, viewer: viewer)
        try await services.accounts.revokePersonalToken(id, by: viewer.caller(request, context))
        return Response.redirect(to: "/tokens?done=revoked", type: .normal)
    }

    private func tokensPage(
        page: PageRequest, caller: UserCaller, addition: TokensAddition, status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tokens = try await services.accounts.tokens(of: caller).filter { $0.kind == .personal }
        let view = TokensPage(
            tokens: tokens.map { TokenRow($0, texts: page.texts) }, empty: tokens.isEmpty, flash: addition.flash,
            createdToken: addition.createdToken, errors: addition.errors, values: FormValues(["name": addition.name]))
        return renderer.page(
            "tokens", view, title: page.texts["tokens_title"], for: page, section: .tokens, status: status)
    }
}

/// The audit log page.
struct AuditPage: Sendable {
    let events: [EventRow]
    let empty: Bool
    /// The next page of older events.
    let older: String?
}

/// One audit event as a table row: when, what, by whom, on which integration, and how it ended.
struct EventRow: Sendable {
    let when: String
    let whenISO: String
    let action: String
    let actionLabel: String
    let outcome: String
    let outcomeLabel: String
    let actor: String
    let target: EventTarget?

    init(_ event: AuditEvent, names: [UUID: String], texts: Texts) {
        action = event.action
        actionLabel = texts.action(event.action)
        outcome = event.outcome
        outcomeLabel = texts["outcome_\(event.outcome)"]
        actor = texts["actor_\(event.actorType)"]
        whenISO = event.at
        let date =
            (try? Date(event.at, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
            ?? (try? Date(event.at, strategy: .iso8601))
        when = date.map { texts.relative($0) } ?? event.at
        target = event.integrationID.map { id in
            EventTarget(
                id: IntegrationPages.idText(id), name: names[id] ?? String(IntegrationPages.idText(id).prefix(8)),
                exists: names[id] != nil)
        }
    }
}

/// The integration an audit event is about; `exists` is false once it was deleted (its id is shown then).
struct EventTarget: Sendable {
    let id: String
    let name: String
    let exists: Bool
}

/// What an action on the tokens page adds to it.
struct TokensAddition: Sendable {
    var flash: Notice? = nil
    /// A token just made, shown once.
    var createdToken: String? = nil
    var errors = FieldMessages.none
    /// The name the refused form shows again.
    var name = ""
}

/// The personal access tokens page.
struct TokensPage: Sendable {
    let tokens: [TokenRow]
    let empty: Bool
    let flash: Notice?
    let createdToken: String?
    let errors: FieldMessages
    let values: FormValues
}

/// A token in a list: never the token itself.
struct TokenRow: Sendable {
    let id: String
    let name: String
    let scopes: String
    let created: String
    let lastUsed: String
    let expires: String?
    /// Neither revoked nor expired.
    let live: Bool

    init(_ token: APIToken, texts: Texts) {
        id = IntegrationPages.idText(token.id)
        name = token.name
        scopes = token.scopes.map(\.rawValue).sorted().joined(separator: ", ")
        created = texts.relative(token.createdAt)
        lastUsed = token.lastUsedAt.map { texts.relative($0) } ?? texts["never"]
        expires = token.expiresAt.map(IntegrationPages.iso)
        live = token.revokedAt == nil && (token.expiresAt.map { $0 > Date() } ?? true)
    }
}
