import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import Testing
import X509

@testable import KeyhavenGateway

@Suite("Provider connections")
struct UpstreamTests {
    @Test("sequential requests share one kept-alive connection; an abandoned answer's connection is closed, not reused")
    func keepAlive() async throws {
        try await withServer { server, origin in
            let connections = UpstreamConnections()
            defer { connections.shutdown() }
            for _ in 0..<10 {
                #expect(try await connections.fetch("/ok", from: origin) == "ok")
            }
            #expect(server.accepted == 1)

            // Half of an endless answer is read, then dropped.
            let (head, answer) = try await connections.send(get("/flood"), to: origin)
            #expect(head.status == .ok)
            _ = try await answer.next()
            answer.abandon()
            #expect(try await connections.fetch("/ok", from: origin) == "ok")
            #expect(server.accepted == 2)
        }
    }

    @Test("a connection its server closed is not reused: the next request, even one not safe to repeat, is answered")
    func closedByServer() async throws {
        try await withServer { server, origin in
            let connections = UpstreamConnections()
            defer { connections.shutdown() }
            #expect(try await connections.fetch("/close", from: origin) == "ok")
            try await Task.sleep(for: .milliseconds(200))
            var post = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/ok")
            post.headers.add(name: "content-length", value: "5")
            let (_, answer) = try await connections.send(
                post, bytes: ByteBuffer(string: "hello"), stream: nil as Pieces?, length: 5, to: origin)
            #expect(try await text(of: answer) == "ok")
            #expect(server.accepted == 2)
        }
    }

    @Test("a reader that stops makes the connection stop reading: the provider cannot push its whole answer")
    func backpressure() async throws {
        try await withServer { server, origin in
            let connections = UpstreamConnections()
            defer { connections.shutdown() }
            let (_, answer) = try await connections.send(get("/flood"), to: origin)
            _ = try await answer.next()
            try await Task.sleep(for: .milliseconds(500))
            // What the kernel's socket buffers hold, plus the few parts the connection keeps, is far below this.
            #expect(server.written < Server.floodBytes / 2, "\(server.written) bytes accepted")
            var read = 0
            while let piece = try await answer.next() { read += piece.readableBytes }
            #expect(server.written == Server.floodBytes)
        }
    }

    @Test("a body longer or shorter than its Content-Length is refused and its connection closed")
    func bodyLength() async throws {
        try await withServer { _, origin in
            let connections = UpstreamConnections()
            defer { connections.shutdown() }
            for pieces in [["12345", "6"], ["123"]] {
                var post = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/ok")
                post.headers.add(name: "content-length", value: "5")
                await #expect(throws: Gateway.Refusal.invalidBody) {
                    _ = try await connections.send(post, bytes: nil, stream: Pieces(pieces), length: 5, to: origin)
                }
            }
            let after = try await connections.fetch("/ok", from: origin)
            #expect(after == "ok")
        }
    }

    @Test(
        """
        over TLS the certificate is verified: a trusted one with the \
        provider's name is answered; otherwise no request is sent
        """
    )
    func tls() async throws {
        let (certificate, key) = try selfSigned(name: "localhost")
        let serving = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(certificate)], privateKey: .privateKey(key))
        try await withServer(tls: serving) { server, plain in
            var trusting = TLSConfiguration.makeClientConfiguration()
            trusting.trustRoots = .certificates([certificate])
            let connections = UpstreamConnections(tls: trusting)
            defer { connections.shutdown() }
            let named = UpstreamOrigin(host: "localhost", port: plain.port, tls: true, address: "127.0.0.1")
            let answer = try await connections.fetch("/ok", from: named)
            #expect(answer == "ok")

            let systemRoots = UpstreamConnections()
            defer { systemRoots.shutdown() }
            await #expect(throws: (any Error).self) { try await systemRoots.fetch("/ok", from: named) }
            let misnamed = UpstreamOrigin(host: "provider.example", port: plain.port, tls: true, address: "127.0.0.1")
            await #expect(throws: (any Error).self) { try await connections.fetch("/ok", from: misnamed) }
            #expect(server.requests == 1)
        }
    }

    @Test("a header value that would split the request is never sent; a caller's broken body is reported as its own")
    func refusedRequests() async throws {
        try await withServer { server, origin in
            let connections = UpstreamConnections()
            defer { connections.shutdown() }
            var split = get("/ok")
            split.headers.add(name: "x-note", value: "a\r\nx-injected: 1")
            await #expect(throws: UpstreamFailure.self) { _ = try await connections.send(split, to: origin) }
            #expect(server.requests == 0)

            var post = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/ok")
            post.headers.add(name: "content-length", value: "10")
            do {
                _ = try await connections.send(post, bytes: nil, stream: Broken(), length: 10, to: origin)
                Issue.record("a broken body was sent")
            } catch UpstreamFailure.requestBody(let error) {
                #expect(error is Broken.BrokenOff)
            }
            let after = try await connections.fetch("/ok", from: origin)
            #expect(after == "ok")
        }
    }

    @Test("a port nobody listens on fails the request without an answer")
    func unreachable() async throws {
        let connections = UpstreamConnections()
        defer { connections.shutdown() }
        let origin = UpstreamOrigin(host: "127.0.0.1", port: try closedPort(), tls: false, address: "127.0.0.1")
        await #expect(throws: (any Error).self) {
            _ = try await connections.send(get("/ok"), to: origin)
        }
    }
}

private func get(_ path: String) -> HTTPRequestHead {
    HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
}

private func text(of answer: UpstreamAnswer) async throws -> String {
    var text = ""
    while let piece = try await answer.next() { text += String(buffer: piece) }
    return text
}

extension UpstreamConnections {
    fileprivate func send(_ head: HTTPRequestHead, to origin: UpstreamOrigin) async throws -> (
        HTTPResponseHead, UpstreamAnswer
    ) {
        try await send(head, bytes: nil, stream: nil as Pieces?, length: nil, to: origin)
    }

    /// The body of the answer to `GET path`.
    fileprivate func fetch(_ path: String, from origin: UpstreamOrigin) async throws -> String {
        try await text(of: send(get(path), to: origin).1)
    }
}

/// A request body in pieces.
private struct Pieces: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let pieces: [String]

    init(_ pieces: [String]) {
        self.pieces = pieces
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var rest: [String]

        mutating func next() async -> ByteBuffer? {
            rest.isEmpty ? nil : ByteBuffer(string: rest.removeFirst())
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(rest: pieces) }
}

/// A request body that breaks off after its first piece, as when the caller goes away.
private struct Broken: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    struct BrokenOff: Error {}

    struct AsyncIterator: AsyncIteratorProtocol {
        var sent = false

        mutating func next() async throws -> ByteBuffer? {
            guard !sent else { throw BrokenOff() }
            sent = true
            return ByteBuffer(string: "12345")
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator() }
}

private func closedPort() throws -> Int {
    let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .bind(host: "127.0.0.1", port: 0).wait()
    let port = channel.localAddress?.port ?? 0
    try channel.close().wait()
    return port
}

/// A provider that counts its connections: `/ok` answers "ok", `/close` answers "ok" and then closes the connection
/// it had not said it would close (as a server does when its keep-alive timeout ends),
/// `/flood` streams ``floodBytes`` as fast as its socket takes them.
private final class Server: Sendable {
    static let floodBytes = 64 << 20
    private let counts = Mutex((accepted: 0, requests: 0, written: 0))
    var accepted: Int { counts.withLock { $0.accepted } }
    var requests: Int { counts.withLock { $0.requests } }
    var written: Int { counts.withLock { $0.written } }

    func accept() { counts.withLock { $0.accepted += 1 } }
    func request() { counts.withLock { $0.requests += 1 } }
    func wrote(_ bytes: Int) { counts.withLock { $0.written += bytes } }
}

private final class ServerHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let server: Server
    var path = ""

    init(server: Server) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            server.request()
            path = head.uri
        case .body:
            break
        case .end:
            var headers = HTTPHeaders()
            switch path {
            case "/flood":
                context.writeAndFlush(
                    wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
                pump(context: context, left: Server.floodBytes)
            default:
                headers.add(name: "content-length", value: "2")
                context.write(
                    wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
                    promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
                let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
                if path == "/close" {
                    let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                    done.whenComplete { _ in bound.value.close(promise: nil) }
                }
            }
        }
    }

    /// Writes the next 64 KiB once the socket has taken the last.
    private func pump(context: ChannelHandlerContext, left: Int) {
        guard left > 0 else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        let size = min(left, 64 << 10)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(repeating: 0x61, count: size))))).whenSuccess
        {
            let (handler, context) = bound.value
            handler.server.wrote(size)
            handler.pump(context: context, left: left - size)
        }
    }
}

/// A certificate for `name` signed by its own key.
private func selfSigned(name: String) throws -> (NIOSSLCertificate, NIOSSLPrivateKey) {
    let key = P256.Signing.PrivateKey()
    let subject = try DistinguishedName { CommonName(name) }
    let now = Date()
    let certificate = try Certificate(
        version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
        notValidBefore: now - 3600, notValidAfter: now + 3600, issuer: subject, subject: subject,
        signatureAlgorithm: .ecdsaWithSHA256,
        extensions: try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            SubjectAlternativeNames([.dnsName(name)])
        },
        issuerPrivateKey: Certificate.PrivateKey(key))
    return (
        try NIOSSLCertificate(bytes: Array(try certificate.serializeAsPEM().pemString.utf8), format: .pem),
        try NIOSSLPrivateKey(bytes: Array(key.pemRepresentation.utf8), format: .pem)
    )
}

/// Runs `body` with a ``Server`` on a free loopback port, over TLS when `tls` is given.
private func withServer(
    tls: TLSConfiguration? = nil, _ body: (Server, UpstreamOrigin) async throws -> Void
) async throws {
    let server = Server()
    let context = try tls.map { try NIOSSLContext(configuration: $0) }
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.backlog, value: 16)
        .childChannelInitializer { channel in
            server.accept()
            return channel.eventLoop.makeCompletedFuture {
                if let context { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context)) }
                try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                try channel.pipeline.syncOperations.addHandler(ServerHandler(server: server))
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    let origin = UpstreamOrigin(
        host: "127.0.0.1", port: channel.localAddress?.port ?? 0, tls: false, address: "127.0.0.1")
    do {
        try await body(server, origin)
    } catch {
        try? await channel.close()
        throw error
    }
    try await channel.close()
}
