import Foundation
import Hummingbird
import KeyhavenCore

/// The OpenAPI 3.1 document of the HTTP API: `Resources/openapi.json`, written by hand and served as is.
public enum OpenAPIDocument {
    /// The document's bytes, read once from the module's resources (empty if the resource is missing, which the
    /// contract tests catch).
    public static let data: Data = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"),
            let data = try? Data(contentsOf: url)
        else { return Data() }
        return data
    }()

    /// Adds `GET /openapi.json`.
    public static func addRoute<Context: RequestContext>(to router: Router<Context>) {
        let buffer = ByteBuffer(bytes: data)
        router.get("/openapi.json") { _, _ in
            guard buffer.readableBytes > 0 else { throw KeyhavenError.internalError }
            return Response(
                status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
                body: .init(byteBuffer: buffer))
        }
    }
}
