import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A client socket to 127.0.0.1 driven by hand: what no well-behaved HTTP client does.
public final class RawConnection: @unchecked Sendable {
    let descriptor: Int32
    private var closed = false

    /// Connects; `receiveBuffer` sets a small receive buffer first (a slow reader's window).
    ///
    /// - Throws: `TestSetupError` when the connection cannot be made.
    public init(port: Int, receiveBuffer: Int32? = nil) throws {
        let made = Self.socket(port: port) { descriptor in
            if var size = receiveBuffer {
                setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            // Reads give up after 100 ms, so every loop over them stays bounded in time.
            var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
            setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
        guard let made else { throw TestSetupError("connect failed") }
        descriptor = made
    }

    /// A blocking TCP connection to 127.0.0.1:`port`, set up by `prepare` before it connects; its descriptor, or
    /// nil when it cannot be made.
    public static func socket(port: Int, prepare: (Int32) -> Void = { _ in }) -> Int32? {
        let descriptor = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return nil }
        prepare(descriptor)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            Glibc.close(descriptor)
            return nil
        }
        return descriptor
    }

    /// Sends all of `text`; false once the server has closed the connection.
    @discardableResult
    public func send(_ text: String) throws -> Bool {
        try send(Array(text.utf8))
    }

    /// Sends all of `bytes`; false once the server has closed the connection.
    @discardableResult
    public func send(_ bytes: [UInt8]) throws -> Bool {
        var bytes = bytes[...]
        while !bytes.isEmpty {
            let sent = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { return false }
            bytes = bytes.dropFirst(sent)
        }
        return true
    }

    public enum Read { case byte, waiting, closed }

    /// Reads at most `count` bytes (at most 64) without waiting; `.byte` when any arrived.
    public func readSome(_ count: Int, into total: inout Int) -> Read {
        var bytes = [UInt8](repeating: 0, count: 64)
        let read = recv(descriptor, &bytes, min(count, 64), Int32(MSG_DONTWAIT))
        if read > 0 {
            total += read
            return .byte
        }
        if read < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return .waiting }
        return .closed
    }

    /// Sends all of `text` without blocking the task's thread (a server's tasks may need it to read what is sent);
    /// false once the server has closed the connection.
    @discardableResult
    public func write(_ text: String) async throws -> Bool {
        try await write(Array(text.utf8)[...]) { _ in }
    }

    /// Sends `count` bytes of `byte` without blocking the task's thread, adding each part sent to `sent` as it
    /// goes; false once the server has closed the connection.
    public func write(repeating byte: UInt8, count: Int, sent: @Sendable (Int) -> Void) async throws -> Bool {
        let piece = [UInt8](repeating: byte, count: 1 << 16)
        var left = count
        while left > 0 {
            let size = min(left, piece.count)
            guard try await write(piece[..<size], sent: sent) else { return false }
            left -= size
        }
        return true
    }

    private func write(_ bytes: ArraySlice<UInt8>, sent: (Int) -> Void) async throws -> Bool {
        var bytes = bytes
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if written > 0 {
                bytes = bytes.dropFirst(written)
                sent(written)
            } else if written < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR {
                try await Task.sleep(for: .milliseconds(1))
            } else {
                return false
            }
        }
        return true
    }

    /// Hands what arrives, piece by piece, to `take` until it has enough (returns true), the server closes the
    /// connection, or `timeout` passes; returns whether the connection was closed. It polls, so the task's thread
    /// is never held.
    private func poll(
        timeout: Duration, bufferSize: Int = 1 << 16, _ take: (ArraySlice<UInt8>) -> Bool
    ) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: bufferSize)
        while ContinuousClock.now < deadline {
            let read = recv(descriptor, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if read > 0 {
                if take(buffer[0..<read]) { return false }
            } else if read == 0 || !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                return true
            } else {
                try? await Task.sleep(for: .milliseconds(2))
            }
        }
        return false
    }

    /// What arrives until `count` whole answers have (``RawAnswer/parse(_:firstToHead:)``), the server closes the
    /// connection, or `timeout` passes; and whether the connection was closed. `toHead`: the first answer is to a
    /// `HEAD` request, so it has no body whatever its length says.
    public func receive(answers count: Int = 1, timeout: Duration = .seconds(10), toHead: Bool = false) async -> (
        answers: [RawAnswer], closed: Bool
    ) {
        var received: [UInt8] = []
        let closed = await poll(timeout: timeout) { piece in
            received += piece
            return RawAnswer.parse(received, firstToHead: toHead).count >= count
        }
        return (RawAnswer.parse(received, firstToHead: toHead), closed)
    }

    /// An answer's head, once it has arrived (nil if it does not within `timeout`): its status and headers, and as
    /// its body what of it came with the head.
    public func receiveHead(timeout: Duration = .seconds(10)) async -> RawAnswer? {
        var received: [UInt8] = []
        var head: RawAnswer?
        _ = await poll(timeout: timeout) { piece in
            received += piece
            guard var answer = RawAnswer.parse(received, firstToHead: true).first,
                let end = RawAnswer.firstRange(of: Array("\r\n\r\n".utf8), in: received[...])
            else { return false }
            answer.body = Array(received[(end + 4)...])
            head = answer
            return true
        }
        return head
    }

    /// Reads and drops what arrives until `total` bytes have, the server closes the connection, or `timeout`
    /// passes; returns how many arrived.
    public func discard(upTo total: Int, timeout: Duration = .seconds(60)) async -> Int {
        var count = 0
        guard total > 0 else { return 0 }
        _ = await poll(timeout: timeout, bufferSize: 1 << 20) { piece in
            count += piece.count
            return count >= total
        }
        return count
    }

    public func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(descriptor)
    }

    deinit { close() }
}

/// An HTTP/1.1 answer as it came over a ``RawConnection``.
public struct RawAnswer: Sendable {
    public var status: Int
    /// Header names lowercased, in order.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    /// The first value of the header `name` (any case).
    public func header(_ name: String) -> String? {
        headers.first { $0.name == name.lowercased() }?.value
    }

    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The whole answers at the start of `bytes`, in order: a body of `Content-Length` bytes, or chunked, or none
    /// (the first one's when it answers a `HEAD` request, `firstToHead`).
    public static func parse(_ bytes: [UInt8], firstToHead: Bool = false) -> [RawAnswer] {
        var answers: [RawAnswer] = []
        var rest = bytes[...]
        while let answer = parseOne(&rest, bodiless: firstToHead && answers.isEmpty) { answers.append(answer) }
        return answers
    }

    private static func parseOne(_ rest: inout ArraySlice<UInt8>, bodiless: Bool) -> RawAnswer? {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        guard let end = firstRange(of: separator, in: rest) else { return nil }
        let head = String(decoding: rest[rest.startIndex..<end], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        let headers = lines.compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (
                line[..<colon].lowercased(),
                line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            )
        }
        var answer = RawAnswer(status: status, headers: headers, body: [])
        var body = rest[(end + separator.count)...]
        if bodiless {
            rest = body
        } else if let length = answer.header("content-length").flatMap({ Int($0) }) {
            guard body.count >= length else { return nil }
            answer.body = Array(body.prefix(length))
            rest = body.dropFirst(length)
        } else if answer.header("transfer-encoding")?.lowercased() == "chunked" {
            while true {
                guard let line = firstRange(of: Array("\r\n".utf8), in: body),
                    let size = Int(String(decoding: body[body.startIndex..<line], as: UTF8.self), radix: 16),
                    body.count >= line - body.startIndex + 2 + size + 2
                else { return nil }
                let start = line + 2
                answer.body += body[start..<(start + size)]
                body = body[(start + size + 2)...]
                if size == 0 { break }
            }
            rest = body
        } else {
            rest = body
        }
        return answer
    }

    static func firstRange(of needle: [UInt8], in haystack: ArraySlice<UInt8>) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var index = haystack.startIndex
        while index + needle.count <= haystack.endIndex {
            if haystack[index..<(index + needle.count)].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}
