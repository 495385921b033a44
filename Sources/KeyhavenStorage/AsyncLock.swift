/// A first-come, first-served lock for async code.
///
/// SQLite allows one writer at a time. Writers from one process queue here, without holding a thread, instead of
/// in SQLite's busy wait, which would block the thread they wait on.
actor AsyncLock {
    private var locked = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    /// Waits until the lock is free and takes it; every `acquire` must be followed by one `release`.
    func acquire() async {
        guard locked else {
            locked = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    /// Frees the lock, handing it to the longest waiter.
    func release() {
        if waiters.isEmpty {
            locked = false
        } else {
            waiters.removeFirst().resume()
        }
    }
}
