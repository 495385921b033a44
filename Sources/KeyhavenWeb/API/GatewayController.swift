import Foundation
import HTTPTypes
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices
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

/// `/gateway/{integration_id}/<provider path>` (SPEC §13): a backend's provider request, forwarded with the stored
/// credential injected. Only service tokens with `gateway:use` may call it, presented the way the provider's SDK
/// presents a key (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key`).
public struct GatewayController: Sendable {
    let gateway: Gateway
    let access: CredentialAccess
    let record: @Sendable (GatewayUse) async -> Void
    let bufferedBodies: MemoryBudget
    let pending: PendingWork

    /// Creates the controller; `record` receives every request that reached the point of being forwarded (for an
    /// answer passed on, off the answer's path, as work of `pending`), and `bufferedBodies` bounds the memory the
    /// bodies of fallback-route requests (held whole) take at once.
    public init(
        gateway: Gateway, access: CredentialAccess, record: @escaping @Sendable (GatewayUse) async -> Void,
        bufferedBodies: MemoryBudget = MemoryBudget(capacity: 256 << 20), pending: PendingWork = PendingWork()
    ) {
        self.bufferedBodies = bufferedBodies
        self.gateway = gateway
        self.access = access
        self.record = record
        self.pending = pending
    }

    /// The methods forwarded.
    static let methods: [HTTPRequest.Method] = [.get, .post, .put, .patch, .delete]

    /// Adds the gateway's routes.
    public func addRoutes(to router: Router<AppRequestContext>) {
        for method in Self.methods {
            router.on("/gateway/:id/**", method: method, use: forward)
            router.on("/gateway/route/:name/**", method: method, use: forwardRoute)
        }
    }

    @Sendable func forward(_ request: Request, context: AppRequestContext) async throws -> Response {
        let token = try await authenticate(request)
        guard let idText = context.parameters.get("id"), let id = UUID(text: idText) else {
            throw KeyhavenError.notFound
        }
        let forwarded = Self.forwarded(request, prefix: "/gateway/\(idText)")
        let (integration, credentials, metering) = try await access.gatewayTarget(id, token: token)
        let upstream = try await send(
            forwarded, body: request.body, to: integration, credentials, metering: metering, token: token,
            eventLoop: context.eventLoop)
        return try await answer(upstream, from: integration, token: token)
    }

    /// The most a request through a fallback route may carry: it is held to be sent again.
    static let routeBodyLimit = 8 << 20

    /// `/gateway/route/{name}/…`: the route's integrations in order, the next one tried when a provider answers
    /// 429 or 5xx, is unreachable, or an integration is disabled or over a limit. The answer that is passed on is
    /// chosen before any of it is sent, so nothing is tried again once a byte has reached the caller.
    @Sendable func forwardRoute(_ request: Request, context: AppRequestContext) async throws -> Response {
        let token = try await authenticate(request)
        guard let name = context.parameters.get("name"), GatewayRoute.isValidName(name) else {
            throw KeyhavenError.notFound
        }
        let route = try await access.gatewayRoute(
            name, token: token, workspace: request.headers[Self.workspaceHeader].flatMap { UUID(text: $0) })
        var forwarded = Self.forwarded(request, prefix: "/gateway/route/\(name)")
        // The body is held whole, to be sent again: its bytes are reserved first (the declared length, else the
        // most a body may be), and past the process's budget the request is turned away at once, not queued.
        let declared = forwarded.contentLength
        if let declared, declared > Self.routeBodyLimit { throw KeyhavenError.payloadTooLarge }
        let reserved = min(max(declared ?? Self.routeBodyLimit, 0), Self.routeBodyLimit)
        guard let reservation = bufferedBodies.reserve(reserved) else {
            var busy = try KeyhavenError.unavailable("Too many large requests are being handled; try again shortly.")
                .response(from: request, context: context)
            busy.headers[.retryAfter] = "1"
            return busy
        }
        defer { reservation.release() }
        let body = try await request.body.collect(upTo: declared ?? Self.routeBodyLimit)
        forwarded.contentLength = body.readableBytes
        var failure: any Error = KeyhavenError.notFound
        for (index, id) in route.integrationIDs.enumerated() {
            let last = index == route.integrationIDs.count - 1
            let (integration, upstream): (Integration, Gateway.Response)
            do {
                let (target, credentials, metering) = try await access.gatewayTarget(id, token: token)
                integration = target
                upstream = try await send(
                    forwarded, body: BufferedBody(body), to: integration, credentials, metering: metering, token: token,
                    eventLoop: context.eventLoop)
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

    /// The caller's request as the gateway forwards it: the path after `prefix`, its query, headers and length.
    static func forwarded(_ request: Request, prefix: String) -> Gateway.Request {
        let path = String(request.uri.path.dropFirst(prefix.count))
        return Gateway.Request(
            method: HTTPMethod(rawValue: request.method.rawValue), path: path.isEmpty ? "/" : path,
            query: request.uri.query, headers: request.headers.map { ($0.name.rawName, $0.value) },
            contentLength: request.headers[.contentLength].flatMap { Int($0) })
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
                    integration: integration, tokenID: token.id, status: Int(error.status.code), metered: nil,
                    at: Date()))
            throw error
        }
    }

    /// The provider's answer, passed on to the caller: a small one of known length read whole and written in one
    /// piece, any other streamed. Its usage is recorded once the answer has been passed on (or the caller went away),
    /// off the answer's path: neither the caller nor the next request on its connection waits for the accounting.
    /// If the server never starts a streamed answer (the caller left while the provider was answering), it is
    /// recorded when the answer is let go.
    ///
    /// - Throws: `providerUnreachable` when a small answer broke off before any of it was passed on.
    func answer(_ upstream: Gateway.Response, from integration: Integration, token: APIToken) async throws -> Response {
        var headers = HTTPFields()
        for (name, value) in upstream.headers {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        headers[Self.integrationHeader] = integration.id.lowercasedText
        let accounting = AnswerAccounting(
            use: GatewayUse(
                integration: integration, tokenID: token.id, status: upstream.status, metered: nil, at: Date()),
            unrelayed: upstream.unrelayed, record: record, pending: pending)
        if let (body, reading) = await upstream.readWhole() {
            accounting.finish(reading)
            guard reading.complete else {
                throw KeyhavenError.providerUnreachable("The provider's answer broke off.")
            }
            return Response(
                status: HTTPResponse.Status(code: upstream.status), headers: headers,
                body: Hummingbird.ResponseBody(byteBuffer: body))
        }
        return Response(
            status: HTTPResponse.Status(code: upstream.status), headers: headers,
            body: Hummingbird.ResponseBody(contentLength: upstream.contentLength) { writer in
                let reading = await upstream.relay { try await writer.write($0) }
                do {
                    try await writer.finish(nil)
                } catch {
                    accounting.finish(reading)
                    throw error
                }
                accounting.finish(reading)
            })
    }

    /// Names the workspace of a route for a service token that is not scoped to one.
    static let workspaceHeader = HTTPField.Name("Keyhaven-Workspace")!

    /// The header that names the integration that answered.
    static let integrationHeader = HTTPField.Name("Keyhaven-Integration")!

    /// The service token presented in any of the headers providers' SDKs use for their key, if it may use the
    /// gateway (``CredentialAccess/gatewayToken(_:)`` decides).
    ///
    /// - Throws: `KeyhavenError.unauthenticated` without a valid service token, `.forbidden` without `gateway:use`.
    func authenticate(_ request: Request) async throws -> APIToken {
        var presented: String?
        if let authorization = request.headers[.authorization], authorization.count > 7,
            authorization.prefix(7).lowercased() == "bearer "
        {
            presented = authorization.dropFirst(7).trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        } else if let key = request.headers[Self.anthropicKey] ?? request.headers[Self.geminiKey] {
            presented = key.trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        }
        return try await access.gatewayToken(presented)
    }

    static let anthropicKey = HTTPField.Name("x-api-key")!
    static let geminiKey = HTTPField.Name("x-goog-api-key")!

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
        case .busy:
            .unavailable("Too many large requests are being handled; try again shortly.")
        }
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
