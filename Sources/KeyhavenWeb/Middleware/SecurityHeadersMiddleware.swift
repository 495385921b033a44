import HTTPTypes
import Hummingbird

/// The security headers of SPEC §9 on every response, error responses included.
public struct SecurityHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    let strictTransportSecurity: Bool

    /// - Parameter strictTransportSecurity: send HSTS (when the public URL is https).
    public init(strictTransportSecurity: Bool) {
        self.strictTransportSecurity = strictTransportSecurity
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var response = try await next(request, context)
        SecurityHeaders.add(to: &response.headers, strictTransportSecurity: strictTransportSecurity)
        return response
    }
}

/// The security headers of SPEC §9: the one list, for the router's answers and the gateway listener's alike.
public enum SecurityHeaders {
    /// Adds the headers to `headers`; HSTS only when `strictTransportSecurity` (the public URL is https).
    public static func add(to headers: inout HTTPFields, strictTransportSecurity: Bool) {
        headers[.contentSecurityPolicy] = contentSecurityPolicy
        headers[.xContentTypeOptions] = "nosniff"
        headers[.keyhavenReferrerPolicy] = "no-referrer"
        headers[.keyhavenFrameOptions] = "DENY"
        if headers[.cacheControl] == nil {
            headers[.cacheControl] = "no-store"
        }
        if strictTransportSecurity {
            headers[.strictTransportSecurity] = "max-age=63072000; includeSubDomains"
        }
    }
}

/// Only this site's own script, stylesheet and requests: no inline script or style, no framing, forms post
/// only here.
let contentSecurityPolicy = [
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
    "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'",
].joined(separator: "; ")

extension HTTPField.Name {
    // Parsed once, not on every response.
    fileprivate static let keyhavenReferrerPolicy = HTTPField.Name("Referrer-Policy")!
    fileprivate static let keyhavenFrameOptions = HTTPField.Name("X-Frame-Options")!
}
