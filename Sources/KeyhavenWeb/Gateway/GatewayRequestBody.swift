import KeyhavenCore
import NIOCore
import Synchronization

/// A request body on the gateway's listener, handed from the connection's event loop to the request's task as it
/// arrives. At most a few pieces wait: past that the connection stops reading from its socket until the task (the
/// forward to the provider) catches up, so a fast caller and a slow provider do not fill the memory.
final class GatewayRequestBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer

    /// Pieces held before reading from the socket pauses; it resumes once fewer than half wait.
    static let highWater = 8

    private struct State {
        var pieces: [ByteBuffer] = []
        var ended = false
        var failure: (any Error)?
        var waiter: CheckedContinuation<ByteBuffer?, any Error>?
        /// A read held back while too many pieces wait.
        var heldRead = false
    }

    private let state = Mutex(State())
    private let channel: any Channel

    /// A body read from `channel`.
    init(channel: any Channel) {
        self.channel = channel
    }

    // MARK: From the event loop

    /// Passes `piece` on.
    func yield(_ piece: ByteBuffer) {
        let waiter = state.withLock { state -> CheckedContinuation<ByteBuffer?, any Error>? in
            guard state.failure == nil, !state.ended else { return nil }
            guard let waiter = state.waiter else {
                state.pieces.append(piece)
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume(returning: piece)
    }

    /// The body's end.
    func finish() {
        let waiter = state.withLock { state in
            state.ended = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// The body will not be read to its end: the connection closed, or its answer ended without it. Unless the
    /// whole body had arrived, what waits is dropped and the reader gets `error`; returns whether a read was being
    /// held back.
    @discardableResult
    func fail(_ error: any Error) -> Bool {
        let (waiter, held) = state.withLock { state in
            let held = state.heldRead
            state.heldRead = false
            guard !state.ended, state.failure == nil else {
                return (nil as CheckedContinuation<ByteBuffer?, any Error>?, held)
            }
            state.failure = error
            state.pieces = []
            defer { state.waiter = nil }
            return (state.waiter, held)
        }
        waiter?.resume(throwing: error)
        return held
    }

    /// Whether the socket may be read now; if not, the read is held until the reader catches up.
    func mayRead() -> Bool {
        state.withLock { state in
            guard state.pieces.count >= Self.highWater, state.failure == nil else { return true }
            state.heldRead = true
            return false
        }
    }

    // MARK: From the request's task

    /// The next piece, nil at the body's end.
    ///
    /// - Throws: what ``fail(_:)`` was given, or `CancellationError`.
    func next() async throws -> ByteBuffer? {
        if let taken = try take() { return taken.piece }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let taken: Taken?
                do {
                    taken = try state.withLock { state in
                        let taken = try Self.take(&state, channel: channel)
                        if taken == nil { state.waiter = continuation }
                        return taken
                    }
                } catch {
                    continuation.resume(throwing: error)
                    return
                }
                if let taken { resume(continuation, with: taken) }
            }
        } onCancel: {
            fail(CancellationError())
        }
    }

    /// A piece taken, or the end; and the channel to read from again if a held read may now go on.
    private struct Taken {
        var piece: ByteBuffer?
        var resumeReading: (any Channel)?
    }

    private func take() throws -> Taken? {
        let taken = try state.withLock { try Self.take(&$0, channel: channel) }
        taken?.resumeReading?.read()
        return taken
    }

    private func resume(_ continuation: CheckedContinuation<ByteBuffer?, any Error>, with taken: Taken) {
        taken.resumeReading?.read()
        continuation.resume(returning: taken.piece)
    }

    private static func take(_ state: inout State, channel: any Channel) throws -> Taken? {
        if !state.pieces.isEmpty {
            let piece = state.pieces.removeFirst()
            var resume: (any Channel)?
            if state.heldRead, state.pieces.count < highWater / 2 {
                state.heldRead = false
                resume = channel
            }
            return Taken(piece: piece, resumeReading: resume)
        }
        if state.ended { return Taken(piece: nil) }
        if let failure = state.failure { throw failure }
        return nil
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let body: GatewayRequestBody

        mutating func next() async throws -> ByteBuffer? {
            try await body.next()
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: self) }
}
