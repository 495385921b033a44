import Synchronization

/// Work started off a request's path that must still be done before the process exits, such as recording a gateway
/// answer's usage once the answer has been passed on: the request does not wait for it, and whoever drains at
/// shutdown (the usage recorder) waits until ``count`` is zero.
public final class PendingWork: Sendable {
    private let running = Atomic<Int>(0)

    /// Creates an empty set of work.
    public init() {}

    /// Runs `work` in a task of its own; the caller goes on at once.
    public func start(_ work: @escaping @Sendable () async -> Void) {
        running.wrappingAdd(1, ordering: .relaxed)
        Task {
            await work()
            self.running.wrappingSubtract(1, ordering: .releasing)
        }
    }

    /// How many of the started pieces of work have not finished.
    public var count: Int { running.load(ordering: .acquiring) }
}
