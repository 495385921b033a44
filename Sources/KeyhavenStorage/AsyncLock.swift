/// A first-come, first-served lock for async code.
///
/// SQLite allows one writer at a time, and a connection waiting for the write lock blocks a thread of the shared
/// I/O thread pool while it waits; writers from one process therefore queue here instead, so they never starve
/// the thread that the current writer needs to finish.
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
