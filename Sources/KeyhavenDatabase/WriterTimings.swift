import KeyhavenCore
import Synchronization

/// Where SQLite's writer spends its time, and what its commits hold: the figures `./scripts/bench` prints and
/// `/metrics` exposes. Each phase adds its time and a count; nothing here is read on a request's path.
public final class WriterTimings: Sendable {
    /// A part of the writer's work.
    public enum Phase: String, CaseIterable, Sendable {
        /// Write transactions' bodies on the writer: their statements and whatever else they do there.
        case body
        /// `COMMIT`: the log's frames written and synced (the fsync).
        case commit
        /// Checkpoints: the log's frames copied into the database file, on a thread of their own.
        case checkpoint
        /// Credential reads: the integrations' rows read (on PostgreSQL with their secrets and the audit chain's head).
        case readRows = "read_rows"
        /// Credential reads: the secrets' rows read and their envelopes opened.
        case openSecrets = "open_secrets"
        /// Audit events: the chain's head read and each event's HMAC computed.
        case auditChain = "audit_chain"
        /// Audit events: their INSERT.
        case auditInsert = "audit_insert"
        /// Credential reads on PostgreSQL: the one statement that checks a group's rows and writes its events.
        case checkedWrite = "checked_write"
    }

    /// The figures so far.
    public struct Snapshot: Sendable, Equatable {
        /// Per phase: how many times it ran and its total time.
        public var phases: [Phase: Total] = [:]
        /// Credential-read groups by size: index `i` counts groups of 2^i to 2^(i+1) − 1 reads.
        public var readGroups: [Int] = Array(repeating: 0, count: WriterTimings.readGroupBuckets)
        /// Commits counted by the log's hook and the frames (pages) they appended; zero on PostgreSQL.
        public var walCommits = 0
        public var walFrames = 0
    }

    /// How many times a phase ran, and its total time in nanoseconds.
    public struct Total: Sendable, Equatable {
        public var count = 0
        public var nanoseconds = 0
    }

    /// Buckets of the read-group histogram: 1, 2–3, 4–7, … 256–511.
    public static let readGroupBuckets = 10

    private let state = Mutex(Snapshot())

    /// No figures yet.
    public init() {}

    /// The figures so far.
    public var snapshot: Snapshot { state.withLock { $0 } }

    /// Runs `body`, adding its time to `phase`.
    public func measure<T>(_ phase: Phase, _ body: () async throws -> T) async rethrows -> T {
        let start = ContinuousClock.now
        defer { add(phase, since: start) }
        return try await body()
    }

    /// Runs `body`, adding its time to `phase`.
    public func measure<T>(_ phase: Phase, _ body: () throws -> T) rethrows -> T {
        let start = ContinuousClock.now
        defer { add(phase, since: start) }
        return try body()
    }

    /// Adds the time since `start` to `phase`.
    public func add(_ phase: Phase, since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        // Saturating: a clock that jumped, or totals kept for centuries, must not stop the process.
        let seconds = Int64(clamping: max(0, elapsed.components.seconds))
        let nanoseconds = Saturating.add(
            Saturating.multiply(seconds, 1_000_000_000), elapsed.components.attoseconds / 1_000_000_000)
        state.withLock { state in
            var total = state.phases[phase, default: Total()]
            total.count = Int(Saturating.add(Int64(total.count), 1))
            total.nanoseconds = Int(Saturating.add(Int64(total.nanoseconds), nanoseconds))
            state.phases[phase] = total
        }
    }

    /// Counts one group of `reads` credential reads written together.
    public func countReadGroup(_ reads: Int) {
        guard reads > 0 else { return }
        let bucket = min(Int.bitWidth - 1 - reads.leadingZeroBitCount, Self.readGroupBuckets - 1)
        state.withLock { $0.readGroups[bucket] += 1 }
    }

    /// Sets the log's totals, as its hook counted them.
    func setWAL(commits: Int, frames: Int) {
        state.withLock { state in
            state.walCommits = commits
            state.walFrames = frames
        }
    }
}
