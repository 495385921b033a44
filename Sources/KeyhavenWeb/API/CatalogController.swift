import Foundation
import Hummingbird
import KeyhavenCore

/// `GET /api/catalog` (SPEC §16): the providers this server knows, the built-in catalog with the operator's
/// additions, as a client needs them to build a form or pick a type. Any signed-in caller may read it; it holds no
/// secret and no operator override of an endpoint.
public struct CatalogController: Sendable {
    /// Creates the controller.
    public init() {}

    /// Adds the route to the `/api/catalog` group.
    public func addRoutes(to group: RouterGroup<UserContext>) {
        group.get(use: list)
    }

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        return Response.json(
            revalidating: request,
            JSONValue.object(["providers": .array(ProviderCatalog.current.providers.map(Self.json))]))
    }

    /// One entry on the wire.
    static func json(_ entry: ProviderEntry) -> JSONValue {
        var credential: [String: JSONValue] = ["kind": .string(entry.credential.kind.rawValue)]
        if entry.credential.kind == .apiKey {
            credential["prefix"] = .string(entry.credential.prefix)
            credential["min_length"] = .number(Double(entry.credential.minLength))
            credential["max_length"] = .number(Double(entry.credential.maxLength))
            credential["example"] = .string(entry.credential.example)
        }
        let gateway: JSONValue =
            entry.gateway.map { rules in
                .object([
                    "usage": .string(rules.usage.rawValue),
                    "metered": .array(rules.metered.map { .string($0.path.text) }),
                    "free": .array(rules.free.map { .string($0.text) }),
                ])
            } ?? .null
        return .object([
            "id": .string(entry.id),
            "names": .object(["en": .string(entry.names.en), "es": .string(entry.names.es)]),
            "group": .string(entry.group.rawValue),
            "mark": .string(entry.mark),
            "credential": .object(credential),
            "settings": .array(
                entry.settings.map { setting in
                    .object([
                        "name": .string(setting.name), "prefix": .string(setting.prefix),
                        "format": .string(setting.format.rawValue), "required": .bool(setting.required),
                        "default": setting.defaultValue.map(JSONValue.string) ?? .null,
                    ])
                }),
            "base_url": .string(entry.baseURL),
            "allowed_hosts": .array(entry.allowedHosts.map(JSONValue.string)),
            "automatic_rotation": .bool(RotationPolicy.allowsAutomatic(entry.type)),
            "gateway": gateway,
        ])
    }
}
