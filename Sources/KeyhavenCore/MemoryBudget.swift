import Synchronization

/// A process-wide allowance of bytes for data held whole in memory (a request body read before it is forwarded, an
/// answer read to find its usage), so that many large requests at once cannot exhaust the memory.
///
/// Reserving never waits: a reservation the budget cannot cover is refused at once, and the caller answers 503
/// (or, for a stream already under way, goes on without holding the bytes).
public final class MemoryBudget: Sendable {
    /// The most bytes reserved at once.
    public let capacity: Int
    private let used = Mutex(0)

    /// Creates a budget of `capacity` bytes (at least 0).
    public init(capacity: Int) {
        self.capacity = max(0, capacity)
    }

    /// The bytes reserved now.
    public var reserved: Int { used.withLock { $0 } }

    /// Reserves `bytes`, or returns nil when they do not fit in what is left (a negative count reserves nothing).
    public func reserve(_ bytes: Int) -> Reservation? {
        let bytes = max(0, bytes)
        let granted = used.withLock { used -> Bool in
            guard bytes <= capacity - used else { return false }
            used += bytes
            return true
        }
        return granted ? Reservation(budget: self, bytes: bytes) : nil
    }

    fileprivate func give(_ bytes: Int) {
        used.withLock { $0 = max(0, $0 - bytes) }
    }

    fileprivate func take(_ bytes: Int) -> Bool {
        used.withLock { used in
            guard bytes <= capacity - used else { return false }
            used += bytes
            return true
        }
    }

    /// Bytes held from a budget until ``release()`` is called or the reservation is freed, whichever comes first.
    public final class Reservation: Sendable {
        private let budget: MemoryBudget
        private let held: Mutex<Int>

        fileprivate init(budget: MemoryBudget, bytes: Int) {
            self.budget = budget
            self.held = Mutex(bytes)
        }

        /// The bytes this reservation holds.
        public var bytes: Int { held.withLock { $0 } }

        /// Holds `more` bytes as well, if the budget has them; false (and nothing changed) if not. For data whose
        /// size is learnt as it arrives.
        public func grow(by more: Int) -> Bool {
            guard more > 0 else { return true }
            return held.withLock { held in
                guard budget.take(more) else { return false }
                held += more
                return true
            }
        }

        /// Gives the bytes back; calling it again does nothing.
        public func release() {
            let bytes = held.withLock { held in
                defer { held = 0 }
                return held
            }
            if bytes > 0 { budget.give(bytes) }
        }

        deinit { release() }
    }
}
