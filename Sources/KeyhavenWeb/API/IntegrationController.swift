import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenServices

/// The integrations API of SPEC §6, and the backend-only credentials route: each handler decodes, calls one
/// method of ``IntegrationService`` or ``CredentialAccess``, and encodes.
public struct IntegrationController: Sendable {
    let service: IntegrationService
    let credentials: CredentialAccess

    /// Creates the controller.
    public init(service: IntegrationService, credentials: CredentialAccess) {
        self.service = service
        self.credentials = credentials
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
        group.post(":id/test", use: test)
        api.get("integrations/:id/credentials", use: readCredentials)
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
        let rotationDue: Bool?
        switch request.uri.queryParameters["rotation_due"].map(String.init) {
        case nil: rotationDue = nil
        case "true": rotationDue = true
        case "false": rotationDue = false
        default: throw KeyhavenError.badRequest("rotation_due must be true or false.")
        }
        let (shown, next, _) = try await service.list(
            in: workspace, by: context.caller(request), limit: limit, after: cursor, rotationDue: rotationDue)
        return Response.json(
            revalidating: request, IntegrationListResponse(integrations: shown, nextCursor: next.map(Cursor.encode)))
    }

    /// `POST /api/integrations/{id}/rotate`: starts a rotation now (SPEC §15); 202 with the rotation.
    @Sendable func rotate(_ request: Request, context: UserContext) async throws -> Response {
        let target = try await service.permit(try UUID.path(context), .editIntegrations, by: context.caller(request))
        return Response.json(status: .accepted, RotationResponse(rotation: try await service.rotate(target)))
    }

    @Sendable func create(_ request: Request, context: UserContext) async throws -> Response {
        let integration = try await service.create(by: context.caller(request)) {
            let decoded = try await CreateIntegrationRequest.read(request, context: context)
            return try decoded.body.validated(decoded.errors).orThrow()
        }
        return Response.json(status: .created, IntegrationResponse(integration: integration))
    }

    @Sendable func get(_ request: Request, context: UserContext) async throws -> Response {
        let target = try await service.permit(try UUID.path(context), .view, by: context.caller(request))
        return Response.json(status: .ok, IntegrationResponse(integration: target.integration))
    }

    @Sendable func update(_ request: Request, context: UserContext) async throws -> Response {
        // The caller must be allowed to change the integration before its body is even looked at.
        let target = try await service.permit(try UUID.path(context), .editIntegrations, by: context.caller(request))
        let decoded = try await UpdateIntegrationRequest.read(request, context: context)
        let current = target.integration
        if let conflict = UpdateIntegrationRequest.typeConflict(for: current, sent: decoded.sent) { throw conflict }
        let changes = try decoded.body.validated(for: current, sent: decoded.sent, decoded.errors).orThrow()
        return Response.json(status: .ok, IntegrationResponse(integration: try await service.update(target, changes)))
    }

    @Sendable func delete(_ request: Request, context: UserContext) async throws -> Response {
        try await service.delete(
            try await service.permit(try UUID.path(context), .editIntegrations, by: context.caller(request)))
        return Response(status: .noContent)
    }

    /// `POST /api/integrations/{id}/move`: out of a workspace where the caller may read its credentials (owners and
    /// admins, who may mint service tokens there) into one where they may add integrations (SPEC §12).
    @Sendable func move(_ request: Request, context: UserContext) async throws -> Response {
        let target = try await service.permit(
            try UUID.path(context), .moveIntegrationsOut, by: context.caller(request))
        let decoded = try await MoveIntegrationRequest.read(request, context: context)
        let workspace = try decoded.body.validated(decoded.errors).orThrow()
        return Response.json(
            status: .ok, IntegrationResponse(integration: try await service.move(target, to: workspace)))
    }

    /// `POST /api/integrations/{id}/test` (SPEC §7): the result in the language of `Accept-Language`.
    @Sendable func test(_ request: Request, context: UserContext) async throws -> Response {
        let target = try await service.permit(try UUID.path(context), .editIntegrations, by: context.caller(request))
        let record = try await service.test(target)
        let language = request.headers[.acceptLanguage]?.lowercased().hasPrefix("es") == true ? "es" : "en"
        return Response.json(status: .ok, TestResultResponse(record: record, language: language))
    }

    /// Backend-only: the decrypted credentials, audited before they leave (SPEC §6, §8).
    @Sendable func readCredentials(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (integration, credentials) = try await credentials.read(
            id: try UUID.path(context), by: context.identity, ip: context.clientAddress,
            userAgent: request.headers[.userAgent])
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
package enum Cursor {
    /// The cursor after the integration `id` (ids are time-ordered UUIDs).
    package static func encode(_ id: UUID) -> String { id.lowercasedText }

    package static func decode(_ text: String) -> UUID? { UUID(text: text) }

    /// The cursor after the audit event `seq`.
    package static func encode(_ seq: Int64) -> String { String(seq) }

    /// A positive decimal number without sign or leading zeros, at most 18 digits.
    package static func decodeSeq(_ text: String) -> Int64? {
        let digits = text.utf8
        guard (1...18).contains(digits.count), digits.first != UInt8(ascii: "0"),
            digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
        else { return nil }
        return Int64(text)
    }
}
