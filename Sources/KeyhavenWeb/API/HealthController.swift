import Hummingbird
import KeyhavenCore
import Synchronization

/// What `/readyz` checks: each dependency the server needs to answer requests.
public struct ReadinessCheck: Sendable {
    /// A short name: `database`, `keyring`.
    public var name: String
    /// Returns whether the dependency is usable now.
    public var check: @Sendable () async -> Bool

    /// Creates a check.
    public init(name: String, check: @escaping @Sendable () async -> Bool) {
        self.name = name
        self.check = check
    }

    /// Creates a check that runs at most once per `interval`: callers in between, and callers while it runs, share
    /// its answer. For a check that writes, so `/readyz` (which anyone who reaches the port may call) cannot become
    /// a stream of writes.
    public init(name: String, atMostEvery interval: Duration, check: @escaping @Sendable () async -> Bool) {
        let last = Mutex<(task: Task<Bool, Never>, started: ContinuousClock.Instant)?>(nil)
        self.init(name: name) {
            let task = last.withLock { last in
                if let last, ContinuousClock.now - last.started < interval { return last.task }
                let task = Task { await check() }
                last = (task, ContinuousClock.now)
                return task
            }
            return await task.value
        }
    }
}

/// `GET /healthz` (the process is alive) and `GET /readyz` (it can serve: every readiness check passes).
public struct HealthController<Context: RequestContext>: Sendable {
    let checks: [ReadinessCheck]

    /// Creates the controller with the checks `/readyz` runs.
    public init(checks: [ReadinessCheck]) {
        self.checks = checks
    }

    struct Status: ResponseBody {
        var status: String
        var checks: [String: String]?

        var json: JSONValue {
            var body: [String: JSONValue] = ["status": .string(status)]
            if let checks { body["checks"] = .object(checks.mapValues { .string($0) }) }
            return .object(body)
        }
    }

    /// Adds the two routes.
    public func addRoutes(to router: Router<Context>) {
        router.get("/healthz") { _, _ in
            Response.json(status: .ok, Status(status: "ok"))
        }
        router.get("/readyz") { _, _ in
            var results: [String: String] = [:]
            for check in checks {
                results[check.name] = await check.check() ? "ok" : "failing"
            }
            let failing = results.filter { $0.value != "ok" }.keys.sorted()
            guard failing.isEmpty else {
                throw KeyhavenError.unavailable("Not ready: \(failing.joined(separator: ", ")) unavailable.")
            }
            return Response.json(status: .ok, Status(status: "ready", checks: results))
        }
    }
}
