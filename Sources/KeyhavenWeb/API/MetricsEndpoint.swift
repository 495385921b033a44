import Crypto
import Foundation
import Hummingbird
import KeyhavenCore

/// `GET /metrics`, the Prometheus exposition (SPEC §6), for the operator's scraper only.
///
/// With a token, a request must present it (`Authorization: Bearer <token>`), else 401; the comparison takes the
/// same time whatever the presented value. Where it is served at all (the public port, a separate address, or
/// nowhere) is decided where the server is put together.
public struct MetricsEndpoint: Sendable {
    let render: @Sendable () -> String
    /// SHA-256 of the token: both sides are compared as digests of the same length.
    let tokenDigest: [UInt8]?

    /// Creates the endpoint; `token` nil serves anyone who reaches it.
    public init(token: String?, render: @escaping @Sendable () -> String) {
        self.render = render
        self.tokenDigest = token.map { Array(SHA256.hash(data: Data($0.utf8))) }
    }

    /// Adds `GET /metrics` to `router`.
    public func addRoute<Context: RequestContext>(to router: Router<Context>) {
        router.get("/metrics") { request, _ in
            guard authorizes(request.headers[.authorization]) else {
                let error = KeyhavenError.unauthenticated
                var response = Response.json(
                    status: .unauthorized, ErrorBody(error: .init(code: error.code, message: error.message)))
                response.headers[.wwwAuthenticate] = "Bearer"
                return response
            }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: render())))
        }
    }

    /// Whether an `Authorization` header value lets the request read the metrics.
    func authorizes(_ authorization: String?) -> Bool {
        guard let tokenDigest else { return true }
        guard let authorization, authorization.utf8.count > 7, authorization.prefix(7).lowercased() == "bearer " else {
            return false
        }
        let presented = Array(SHA256.hash(data: Data(authorization.utf8.dropFirst(7))))
        var difference: UInt8 = 0
        for (left, right) in zip(presented, tokenDigest) { difference |= left ^ right }
        return difference == 0
    }
}
