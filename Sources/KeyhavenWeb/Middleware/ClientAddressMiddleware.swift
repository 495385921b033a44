import HTTPTypes
import Hummingbird

/// Behind a load balancer every request comes from the balancer's address. When the peer is one of the trusted
/// proxies, the client is the right-most address of `X-Forwarded-For` that is not itself a trusted proxy; the
/// header is ignored otherwise, so a client cannot choose the address its rate limits are counted under.
public struct ClientAddressMiddleware: RouterMiddleware {
    public typealias Context = AppRequestContext

    let trustedProxies: Set<String>

    /// - Parameter trustedProxies: the exact IP addresses of the proxies in front of Keyhaven.
    public init(trustedProxies: Set<String>) {
        self.trustedProxies = trustedProxies
    }

    public func handle(
        _ request: Request, context: AppRequestContext, next: (Request, AppRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        if let peer = context.clientAddress, trustedProxies.contains(peer),
            let forwarded = request.headers[values: .xForwardedFor].joined(separator: ",").nonEmpty
        {
            let hops = forwarded.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            context.clientAddress = hops.last { !trustedProxies.contains($0) } ?? hops.first ?? peer
        }
        return try await next(request, context)
    }
}

extension String {
    fileprivate var nonEmpty: String? { isEmpty ? nil : self }
}

extension HTTPField.Name {
    static var xForwardedFor: Self { Self("X-Forwarded-For")! }
}
