import Foundation
import Hummingbird
import KeyhavenCore

/// The integrations API of SPEC §6, and the backend-only credentials route.
public struct IntegrationController: Sendable {
    let integrations: any IntegrationStore
    let audit: any AuditLog
    let limiter: any RateLimiter
    let checks: CheckRateLimit
    let rotations: any RotationStore
    let access: WorkspaceAccess

    /// Creates the controller; `checks` limits how many provider checks a user's creates, updates and rotations
    /// start.
    public init(
        integrations: any IntegrationStore, audit: any AuditLog, limiter: any RateLimiter, checks: CheckRateLimit,
        rotations: any RotationStore, access: WorkspaceAccess
    ) {
        self.access = access
        self.integrations = integrations
        self.audit = audit
        self.limiter = limiter
        self.checks = checks
        self.rotations = rotations
    }

    /// Adds the user routes to the `/api/integrations` group and the credentials route to `api`.
    public func addRoutes(to group: RouterGroup<UserContext>, api: RouterGroup<AppRequestContext>) {
        group.get(use: list)
        group.post(use: create)
        group.get(":id", use: get)
        group.put(":id", use: update)
        group.patch(":id", use: update)
        group.delete(":id", use: delete)
        group.post(":id/rotate", use: rotate)
        group.post(":id/move", use: move)
        api.get("integrations/:id/credentials", use: credentials)
    }

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        let limitText = request.uri.queryParameters["limit"].map(String.init)
        let limit = limitText.map { Int($0) } ?? 50
        guard let limit, (1...200).contains(limit) else {
            throw KeyhavenError.badRequest("limit must be a whole number from 1 to 200.")
        }
        var cursor: UUID?
        if let text = request.uri.queryParameters["cursor"].map(String.init) {
            guard let decoded = Cursor.decode(text) else { throw KeyhavenError.badRequest("The cursor is not valid.") }
            cursor = decoded
        }
        let workspace = try WorkspaceParameter.query(request, default: context.user.id)
        _ = try await access.require(.view, in: workspace, for: context.user)
        let rotationDue: Bool?
        switch request.uri.queryParameters["rotation_due"].map(String.init) {
        case nil: rotationDue = nil
        case "true": rotationDue = true
        case "false": rotationDue = false
        default: throw KeyhavenError.badRequest("rotation_due must be true or false.")
        }
        guard let due = rotationDue else {
            let page = try await integrations.list(ownerID: workspace, limit: limit + 1, after: cursor)
            let shown = Array(page.prefix(limit))
            let next = page.count > limit ? shown.last.map { Cursor.encode($0.id) } : nil
            return Response.json(status: .ok, IntegrationListResponse(integrations: shown, nextCursor: next))
        }
        // Filtered: pages are read until `limit` match or 5,000 rows were looked at; the cursor is the last row
        // looked at, so the next page goes on from there.
        let now = Date()
        var shown: [Integration] = []
        var position = cursor
        var scanned = 0
        var exhausted = false
        scan: while shown.count < limit && scanned < 5_000 {
            let page = try await integrations.list(ownerID: workspace, limit: 200, after: position)
            for integration in page {
                position = integration.id
                scanned += 1
                if integration.rotationDue(now: now) == due { shown.append(integration) }
                if shown.count == limit { break scan }
            }
            if page.count < 200 {
                exhausted = true
                break
            }
        }
        let next = exhausted ? nil : position.map(Cursor.encode)
        return Response.json(status: .ok, IntegrationListResponse(integrations: shown, nextCursor: next))
    }

    /// `POST /api/integrations/{id}/rotate`: starts a rotation now (SPEC §15); 202 with the rotation.
    @Sendable func rotate(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let integration = try await access.integration(try UUID.path(context), .editIntegrations, for: context.user)
        try await checks.count(context.user.id, on: limiter)
        let rotation = try await rotations.request(
            id: integration.id, ownerID: integration.ownerID, actor: context.actor(request), now: Date())
        return Response.json(status: .accepted, RotationResponse(rotation: rotation))
    }

    @Sendable func create(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let decoded = try await CreateIntegrationRequest.read(request, context: context)
        let new = try decoded.body.validated(decoded.errors).orThrow()
        let workspace = new.workspace ?? context.user.id
        _ = try await access.require(.editIntegrations, in: workspace, for: context.user)
        try await checks.count(context.user.id, on: limiter)
        let integration = try await integrations.create(
            ownerID: workspace, name: new.name, type: new.type, config: new.config, credentials: new.credentials,
            rotation: new.rotation, actor: context.actor(request))
        return Response.json(status: .created, IntegrationResponse(integration: integration))
    }

    @Sendable func get(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        let integration = try await access.integration(try UUID.path(context), .view, for: context.user)
        return Response.json(status: .ok, IntegrationResponse(integration: integration))
    }

    @Sendable func update(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        // The caller must be allowed to change the integration before its body is even looked at.
        let current = try await access.integration(try UUID.path(context), .editIntegrations, for: context.user)
        let decoded = try await UpdateIntegrationRequest.read(request, context: context)
        if let conflict = UpdateIntegrationRequest.typeConflict(for: current, sent: decoded.sent) { throw conflict }
        let changes = try decoded.body.validated(for: current, sent: decoded.sent, decoded.errors).orThrow()
        if changes.credentials != nil || (changes.enabled == true && !current.enabled) {
            try await checks.count(context.user.id, on: limiter)
        }
        let integration = try await integrations.update(
            id: current.id, ownerID: current.ownerID, changes: changes, actor: context.actor(request))
        return Response.json(status: .ok, IntegrationResponse(integration: integration))
    }

    @Sendable func delete(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let integration = try await access.integration(try UUID.path(context), .editIntegrations, for: context.user)
        try await integrations.delete(id: integration.id, ownerID: integration.ownerID, actor: context.actor(request))
        return Response(status: .noContent)
    }

    /// `POST /api/integrations/{id}/move`: out of a workspace where the caller may read its credentials (owners and
    /// admins, who may mint service tokens there) into one where they may add integrations (SPEC §12). A member may
    /// not: in a workspace of their own they could mint a token and read the key. A target they are not a member of
    /// is not found, as any workspace of others.
    @Sendable func move(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let integration = try await access.integration(
            try UUID.path(context), .moveIntegrationsOut, for: context.user)
        let decoded = try await MoveIntegrationRequest.read(request, context: context)
        let target = try decoded.body.validated(decoded.errors).orThrow()
        _ = try await access.require(.editIntegrations, in: target, for: context.user)
        let moved = try await integrations.move(
            id: integration.id, from: integration.ownerID, to: target, actor: context.actor(request))
        return Response.json(status: .ok, IntegrationResponse(integration: moved))
    }

    /// Backend-only: the decrypted credentials, audited before they leave (SPEC §6, §8).
    @Sendable func credentials(_ request: Request, context: AppRequestContext) async throws -> Response {
        let id = try UUID.path(context)
        let service: ServiceContext
        do {
            service = try ServiceContext(context: context)
        } catch {
            // A refused read is audited too; an anonymous caller is not an actor worth a record.
            let refused: (AuditActor.Kind, UUID, UUID?, String)? =
                switch context.identity {
                case .user(let user, _)?: (.user, user.id, user.id, "not_a_service_token")
                case .service(let token)?: (.service, token.id, nil, "missing_scope")
                case nil: nil
                }
            if let (kind, actorID, ownerID, reason) = refused {
                let actor = AuditActor(
                    kind: kind, id: actorID.lowercasedText, ip: context.clientAddress,
                    userAgent: request.headers[.userAgent])
                try await audit.append(
                    AuditEntry(
                        actor: actor, action: .credentialsRead, outcome: .denied, ownerID: ownerID, integrationID: id,
                        detail: ["reason": .string(reason)]))
            }
            throw error
        }
        let (integration, credentials) = try await integrations.readCredentials(
            id: id, scope: service.token.workspaceID, actor: service.actor(request))
        var response = Response.json(
            status: .ok, CredentialsResponse(integration: integration, credentials: credentials))
        response.headers[.cacheControl] = "no-store"
        return response
    }
}

/// The `workspace_id` of lists and creates: a lowercase UUID; absent means the caller's personal workspace.
enum WorkspaceParameter {
    /// The `workspace_id` query parameter.
    ///
    /// - Throws: `KeyhavenError.badRequest` if it is not a UUID.
    static func query(_ request: Request, default personal: UUID) throws -> UUID {
        guard let text = request.uri.queryParameters["workspace_id"].map(String.init) else { return personal }
        guard let id = UUID(text: text) else { throw KeyhavenError.badRequest("workspace_id must be a UUID.") }
        return id
    }

    /// A body's `workspace_id` field, nil when absent or null; problems go to `errors`.
    static func field(_ input: Input<String>?, errors: inout FieldErrors) -> UUID? {
        guard let input else { return nil }
        guard let text = input.value, let id = UUID(text: text) else {
            errors["workspace_id"] = "must be a workspace id (a UUID)"
            return nil
        }
        return id
    }
}

/// Page cursors: the position after which the next page starts. Clients pass them back as they got them; the
/// document describes their form exactly (a lowercase UUID for integrations, a sequence number for audit events),
/// so any cursor of that form is a valid position and anything else is a 400.
enum Cursor {
    /// The cursor after the integration `id` (ids are time-ordered UUIDs).
    static func encode(_ id: UUID) -> String { id.lowercasedText }

    static func decode(_ text: String) -> UUID? { UUID(text: text) }

    /// The cursor after the audit event `seq`.
    static func encode(_ seq: Int64) -> String { String(seq) }

    /// A positive decimal number without sign or leading zeros, at most 18 digits.
    static func decodeSeq(_ text: String) -> Int64? {
        let digits = text.utf8
        guard (1...18).contains(digits.count), digits.first != UInt8(ascii: "0"),
            digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
        else { return nil }
        return Int64(text)
    }
}
