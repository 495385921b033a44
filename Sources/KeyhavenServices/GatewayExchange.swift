import Foundation
import HTTPTypes
import KeyhavenCore
import KeyhavenGateway
import NIOCore
import NIOHTTP1
import Synchronization

/// What one gateway request came to, for usage and metrics.
public struct GatewayUse: Sendable {
    public var integration: Integration
    public var tokenID: UUID
    /// The provider's status, or Keyhaven's own when the provider was not reached.
    public var status: Int
    /// What the answer said about its model and usage; nil when no answer was relayed.
    public var metered: Gateway.Metered?
    public var at: Date
}

/// One gateway request (SPEC §13), whichever server received it: `/gateway/{integration_id}/<provider path>` and
/// `/gateway/route/{name}/<provider path>` are served by the router on the public port and by the gateway's own
/// listener (`KEYHAVEN_GATEWAY_ADDRESS`). Both hand the caller's request to ``answer(_:to:body:eventLoop:)`` and pass
/// on what it returns, so the token, the target, the fallback order, the limits, the usage and the errors are
/// decided here once and the two cannot drift.
///
/// Only service tokens with `gateway:use` may call it, presented the way the provider's SDK presents a key
/// (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key`).
public struct GatewayExchange: Sendable {
    let gateway: Gateway
    let access: CredentialAccess
    let record: @Sendable (GatewayUse) async -> Void
    let bufferedBodies: MemoryBudget
    let pending: PendingWork

    /// Creates the exchange; `record` receives every request that reached the point of being forwarded (for an
    /// answer passed on, off the answer's path, as work of `pending`), and `bufferedBodies` bounds the memory the
    /// bodies of fallback-route requests (held whole) take at once.
    public init(
        gateway: Gateway, access: CredentialAccess, record: @escaping @Sendable (GatewayUse) async -> Void,
        bufferedBodies: MemoryBudget = MemoryBudget(capacity: 256 << 20), pending: PendingWork = PendingWork()
    ) {
        self.gateway = gateway
        self.access = access
        self.record = record
        self.bufferedBodies = bufferedBodies
        self.pending = pending
    }

    /// The methods forwarded.
    public static let methods: [HTTPRequest.Method] = [.get, .post, .put, .patch, .delete]

    /// The most a request through a fallback route may carry: it is held to be sent again.
    public static let routeBodyLimit = 8 << 20

    /// Names the workspace of a route for a service token that is not scoped to one.
    public static let workspaceHeader = HTTPField.Name("Keyhaven-Workspace")!

    /// The header that names the integration that answered.
    public static let integrationHeader = HTTPField.Name("Keyhaven-Integration")!

    static let anthropicKey = HTTPField.Name("x-api-key")!
    static let geminiKey = HTTPField.Name("x-goog-api-key")!

    /// What a gateway path names: an integration or a fallback route, and the provider path after it.
    public struct Target: Sendable, Equatable {
        /// The two kinds of gateway path.
        public enum Kind: Sendable {
            /// `/gateway/{id}/…`
            case integration
            /// `/gateway/route/{name}/…`
            case route
        }

        public var kind: Kind
        /// The integration's id or the route's name, as the path spells it.
        public var name: Substring
        /// The rest of the path, from its `/`: what the provider is asked for.
        public var providerPath: Substring

        /// The route pattern, for log lines and metrics: never the path, which holds ids.
        public var pattern: String {
            switch kind {
            case .integration: "/gateway/{id}/**"
            case .route: "/gateway/route/{name}/**"
            }
        }

        /// The target of `path` (without its query), matched as the router matches `/gateway/:id/**` and
        /// `/gateway/route/:name/**`: empty segments do not count, `route` is the literal segment first, and at
        /// least one segment follows the id or the name. Nil for a path that is not the gateway's.
        public init?(path: String) {
            var segments: [Substring] = []
            for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
                segments.append(segment)
                if segments.count == 4 { break }
            }
            guard segments.count >= 3, segments[0] == "gateway" else { return nil }
            let named: Substring
            if segments[1] == "route" {
                guard segments.count == 4 else { return nil }
                (kind, named) = (.route, segments[2])
            } else {
                (kind, named) = (.integration, segments[1])
            }
            name = named
            providerPath = path[named.endIndex...]
        }
    }

    /// The caller's request, as its server received it.
    public struct Call: Sendable {
        public var method: HTTPRequest.Method
        /// The path, without the query.
        public var path: String
        /// The query, without its `?`.
        public var query: String?
        public var headers: HTTPFields

        /// Creates a call.
        public init(method: HTTPRequest.Method, path: String, query: String?, headers: HTTPFields) {
            self.method = method
            self.path = path
            self.query = query
            self.headers = headers
        }
    }

    /// Answers a gateway request: the service token, the integration (or each of the route's in turn), the limits,
    /// the forward with the credential injected, and the provider's answer as the caller gets it.
    ///
    /// `eventLoop` is the caller's connection's own: a provider connection living there is preferred.
    ///
    /// - Throws: `KeyhavenError` (the JSON error body of SPEC §6 for the caller), ``GatewayBusy`` when the process
    ///   holds as many bodies as its memory budget allows, or what reading `body` threw.
    public func answer<Body: AsyncSequence & Sendable>(
        _ call: Call, to target: Target, body: Body, eventLoop: (any EventLoop)?
    ) async throws -> GatewayAnswer where Body.Element == ByteBuffer {
        let token = try await authenticate(call.headers)
        switch target.kind {
        case .integration:
            guard let id = UUID(text: String(target.name)) else { throw KeyhavenError.notFound }
            let forwarded = Self.forwarded(call, providerPath: target.providerPath)
            let (integration, credentials, metering) = try await access.gatewayTarget(id, token: token)
            let upstream = try await send(
                forwarded, body: body, to: integration, credentials, metering: metering, token: token,
                eventLoop: eventLoop)
            return try await answer(upstream, from: integration, token: token)
        case .route:
            return try await forwardRoute(call, to: target, body: body, token: token, eventLoop: eventLoop)
        }
    }

    /// `/gateway/route/{name}/…`: the route's integrations in order, the next one tried when a provider answers
    /// 429 or 5xx, is unreachable, or an integration is disabled or over a limit. The answer that is passed on is
    /// chosen before any of it is sent, so nothing is tried again once a byte has reached the caller.
    func forwardRoute<Body: AsyncSequence & Sendable>(
        _ call: Call, to target: Target, body: Body, token: APIToken, eventLoop: (any EventLoop)?
    ) async throws -> GatewayAnswer where Body.Element == ByteBuffer {
        let name = String(target.name)
        guard GatewayRoute.isValidName(name) else { throw KeyhavenError.notFound }
        let route = try await access.gatewayRoute(
            name, token: token, workspace: call.headers[Self.workspaceHeader].flatMap { UUID(text: $0) })
        var forwarded = Self.forwarded(call, providerPath: target.providerPath)
        // The body is held whole, to be sent again: its bytes are reserved first (the declared length, else the
        // most a body may be), and past the process's budget the request is turned away at once, not queued.
        let declared = forwarded.contentLength
        if let declared, declared > Self.routeBodyLimit { throw KeyhavenError.payloadTooLarge }
        let reserved = min(max(declared ?? Self.routeBodyLimit, 0), Self.routeBodyLimit)
        guard let reservation = bufferedBodies.reserve(reserved) else { throw GatewayBusy() }
        defer { reservation.release() }
        let whole = try await Self.collect(body, upTo: declared ?? Self.routeBodyLimit)
        forwarded.contentLength = whole.readableBytes
        var failure: any Error = KeyhavenError.notFound
        for (index, id) in route.integrationIDs.enumerated() {
            let last = index == route.integrationIDs.count - 1
            let (integration, upstream): (Integration, Gateway.Response)
            do {
                let (target, credentials, metering) = try await access.gatewayTarget(id, token: token)
                integration = target
                upstream = try await send(
                    forwarded, body: BufferedBody(whole), to: integration, credentials, metering: metering,
                    token: token, eventLoop: eventLoop)
            } catch {
                failure = error
                continue
            }
            if !last, upstream.status == 429 || upstream.status >= 500 {
                await upstream.discard()
                await record(
                    GatewayUse(
                        integration: integration, tokenID: token.id, status: upstream.status, metered: nil, at: Date()))
                continue
            }
            // The answer chosen: whatever becomes of it, no other integration is tried.
            return try await answer(upstream, from: integration, token: token)
        }
        throw failure
    }

    /// A body read whole, of at most `limit` bytes.
    ///
    /// - Throws: `KeyhavenError.payloadTooLarge` past `limit`; what reading `body` threw.
    static func collect<Body: AsyncSequence>(_ body: Body, upTo limit: Int) async throws -> ByteBuffer
    where Body.Element == ByteBuffer {
        var whole = ByteBuffer()
        for try await piece in body {
            guard piece.readableBytes <= limit - whole.readableBytes else { throw KeyhavenError.payloadTooLarge }
            var piece = piece
            whole.writeBuffer(&piece)
        }
        return whole
    }

    /// The caller's request as the gateway forwards it: the provider path, its query, headers and length.
    static func forwarded(_ call: Call, providerPath: Substring) -> Gateway.Request {
        Gateway.Request(
            method: HTTPMethod(rawValue: call.method.rawValue), path: providerPath.isEmpty ? "/" : String(providerPath),
            query: call.query, headers: call.headers.map { ($0.name.rawName, $0.value) },
            contentLength: call.headers[.contentLength].flatMap { Int($0) })
    }

    /// Sends the request; a refusal is counted and becomes the caller's error.
    func send<Body: AsyncSequence & Sendable>(
        _ forwarded: Gateway.Request, body: Body, to integration: Integration, _ credentials: Credentials,
        metering: Gateway.Metering, token: APIToken, eventLoop: (any EventLoop)?
    ) async throws -> Gateway.Response where Body.Element == ByteBuffer {
        do {
            return try await gateway.forward(
                forwarded, body: body, integration: integration, credentials: credentials, metering: metering,
                eventLoop: eventLoop)
        } catch let refusal as Gateway.Refusal {
            let error = Self.error(refusal, inspectLimit: gateway.inspectLimit)
            await record(
                GatewayUse(
                    integration: integration, tokenID: token.id, status: Int(error.httpStatus.code), metered: nil,
                    at: Date()))
            if refusal == .busy { throw GatewayBusy() }
            throw error
        }
    }

    /// The provider's answer as the caller gets it: a small one of known length read whole, to be written in one
    /// piece, any other relayed as it arrives. Its usage is recorded once the answer has been passed on (or the
    /// caller went away), off the answer's path: neither the caller nor the next request on its connection waits
    /// for the accounting. An answer that is never relayed (the caller left while the provider was answering) is
    /// recorded when it is let go.
    ///
    /// - Throws: `providerUnreachable` when a small answer broke off before any of it was passed on.
    func answer(_ upstream: Gateway.Response, from integration: Integration, token: APIToken) async throws
        -> GatewayAnswer
    {
        var headers = HTTPFields()
        for (name, value) in upstream.headers {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        headers[Self.integrationHeader] = integration.id.lowercasedText
        let accounting = AnswerAccounting(
            use: GatewayUse(
                integration: integration, tokenID: token.id, status: upstream.status, metered: nil, at: Date()),
            unrelayed: upstream.unrelayed, record: record, pending: pending)
        let status = HTTPResponse.Status(code: upstream.status)
        if let (body, reading) = await upstream.readWhole() {
            accounting.finish(reading)
            guard reading.complete else {
                throw KeyhavenError.providerUnreachable("The provider's answer broke off.")
            }
            return GatewayAnswer(status: status, headers: headers, body: .whole(body))
        }
        return GatewayAnswer(
            status: status, headers: headers, body: .relayed(GatewayRelay(upstream: upstream, accounting: accounting)))
    }

    /// The service token presented in any of the headers providers' SDKs use for their key, if it may use the
    /// gateway (``CredentialAccess/gatewayToken(_:)`` decides).
    ///
    /// - Throws: `KeyhavenError.unauthenticated` without a valid service token, `.forbidden` without `gateway:use`.
    func authenticate(_ headers: HTTPFields) async throws -> APIToken {
        var presented: String?
        if let authorization = headers[.authorization], authorization.count > 7,
            authorization.prefix(7).lowercased() == "bearer "
        {
            presented = authorization.dropFirst(7).trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        } else if let key = headers[Self.anthropicKey] ?? headers[Self.geminiKey] {
            presented = key.trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        }
        return try await access.gatewayToken(presented)
    }

    static func error(_ refusal: Gateway.Refusal, inspectLimit: Int) -> KeyhavenError {
        switch refusal {
        case .invalidPath:
            .badRequest("The provider path cannot be forwarded: it must stay within the provider's API.")
        case .invalidBody:
            .badRequest("The request body is longer than its Content-Length.")
        case .tooLargeToMeter:
            .tooLargeToMeter(maximumBytes: inspectLimit)
        case .endpointNotMetered:
            .endpointNotMetered(
                "Keyhaven cannot meter this endpoint's usage, and a budget or token limit of the integration or its "
                    + "workspace needs it metered; an owner can allow unmetered endpoints in the limits.")
        case .endpointNotAllowed:
            .providerUnreachable("The provider's endpoint is not allowed by the egress policy.")
        case .unreachable:
            .providerUnreachable("The provider could not be reached.")
        case .credentialsRefused:
            .providerUnreachable("The provider refused the stored service account when asked for an access token.")
        case .busy:
            GatewayBusy.error
        }
    }
}

/// The process holds as many request bodies in memory as its budget allows: the request is answered `503` at once
/// with `Retry-After`, never queued.
public struct GatewayBusy: Error, Sendable {
    /// The error the caller reads.
    public static let error = KeyhavenError.unavailable("Too many large requests are being handled; try again shortly.")
    /// The seconds the caller is asked to wait.
    public static let retryAfterSeconds = 1

    public init() {}
}

/// A gateway request's answer, for its server to write.
public struct GatewayAnswer: Sendable {
    public var status: HTTPResponse.Status
    /// The provider's headers that pass back, and `Keyhaven-Integration`.
    public var headers: HTTPFields
    public var body: Body

    /// How the body is passed on.
    public enum Body: Sendable {
        /// Read whole (a small answer of known length): written in one piece.
        case whole(ByteBuffer)
        /// Relayed as it arrives.
        case relayed(GatewayRelay)
    }
}

/// An answer passed on as the provider sends it, its usage read on the way and recorded exactly once.
public struct GatewayRelay: Sendable {
    let upstream: Gateway.Response
    let accounting: AnswerAccounting

    /// The body's length, when it is known and passed on unchanged.
    public var contentLength: Int? { upstream.contentLength }

    /// Why a relayed answer cannot end as if it were whole.
    public struct BrokenOff: Error, Sendable {}

    /// Passes the body on to `write`, piece by piece, then ends the answer with `finish`; the usage is recorded
    /// once either way, after the end, and the provider's connection is closed if the answer was not read to its
    /// end (the caller went away, or a write failed).
    ///
    /// - Throws: ``BrokenOff`` when the provider broke off or a write failed: the caller's answer is then cut short
    ///   (its connection closed), never ended as if it were whole; what `finish` threw.
    public func relay(
        write: (ByteBuffer) async throws -> Void, finish: () async throws -> Void
    ) async throws {
        let reading = await upstream.relay(write)
        defer { accounting.finish(reading) }
        guard reading.complete else { throw BrokenOff() }
        try await finish()
    }
}

/// One relayed answer's usage, recorded exactly once: by the relay when it ends, or, when the server drops the
/// answer without starting it (writing its head failed: the caller left while the provider was answering), when the
/// last reference goes, as an answer that ended without usage. Otherwise that request would be billed by the
/// provider and recorded nowhere. Either way the recording is work of ``pending``, off the answer's path.
final class AnswerAccounting: Sendable {
    let use: GatewayUse
    let unrelayed: Gateway.Metered
    let record: @Sendable (GatewayUse) async -> Void
    let pending: PendingWork
    private let recorded = Atomic(false)

    init(
        use: GatewayUse, unrelayed: Gateway.Metered, record: @escaping @Sendable (GatewayUse) async -> Void,
        pending: PendingWork
    ) {
        self.use = use
        self.unrelayed = unrelayed
        self.record = record
        self.pending = pending
    }

    /// Records what the relay read, unless it was recorded already; the caller does not wait.
    func finish(_ reading: Gateway.Reading) {
        guard !recorded.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let (use, record) = (use, record)
        pending.start {
            var finished = use
            finished.metered = reading.metered()
            await record(finished)
        }
    }

    deinit {
        guard !recorded.load(ordering: .acquiring) else { return }
        var finished = use
        finished.metered = unrelayed
        let (unrelayedUse, record) = (finished, record)
        pending.start { await record(unrelayedUse) }
    }
}
