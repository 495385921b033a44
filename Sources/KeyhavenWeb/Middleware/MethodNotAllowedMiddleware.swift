import Foundation
import Hummingbird
import KeyhavenCore
import Synchronization

/// Answers 405 with an `Allow` header, instead of 404, when a path exists but not with the request's method (RFC
/// 9110 §15.5.6), with the JSON error body of SPEC §6.
public struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The router's routes, filled once every route is added.
    public final class Routes: Sendable {
        private let table = Mutex<[(segments: [String], methods: [String])]>([])

        /// Creates an empty table.
        public init() {}

        /// Records the router's routes.
        public func load(_ routes: [Router<Context>.RouteDescription]) {
            var byPath: [String: Set<String>] = [:]
            for route in routes { byPath[route.path.description, default: []].insert(route.method.rawValue) }
            let entries = byPath.map { path, methods in
                (segments: path.split(separator: "/").map(String.init), methods: methods.sorted())
            }
            table.withLock { $0 = entries }
        }

        /// The methods of the routes whose path matches `path`; empty when none does.
        func methods(for path: String) -> [String] {
            let parts = path.split(separator: "/").map(String.init)
            return table.withLock { entries in
                Array(Set(entries.filter { Self.matches($0.segments, parts) }.flatMap(\.methods))).sorted()
            }
        }

        static func matches(_ template: [String], _ parts: [String]) -> Bool {
            for (index, segment) in template.enumerated() {
                if segment == "**" { return true }
                guard index < parts.count else { return false }
                if segment == "*" || (segment.hasPrefix("{") && segment.hasSuffix("}")) { continue }
                if segment != parts[index] { return false }
            }
            return template.count == parts.count
        }
    }

    let routes: Routes

    /// Creates the middleware over a table that is filled once the routes are known.
    public init(routes: Routes) {
        self.routes = routes
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            // Only the router's own "no route" error: a handler's not-found is a KeyhavenError.
            let allowed = routes.methods(for: request.uri.path)
            guard !allowed.isEmpty, !allowed.contains(request.method.rawValue) else { throw error }
            return ErrorAnswer.methodNotAllowed(allowed: allowed).response
        }
    }
}
