import AsyncHTTPClient
import Foundation
import KeyhavenClient
import KeyhavenTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// Kills `keyhaven serve` with SIGKILL at a random moment under concurrent creates, credential replacements,
/// deletes and credential reads, `cycles` times, and after each kill checks the data at rest and through a
/// restarted server (see ``Deployment/checkAtRest(answeredReads:)`` and ``Ledger/check(vault:backend:)``).
struct CrashCycles {
    let deployment: Deployment
    let cycles: Int
    let clients: Int
    /// How long the load runs before the kill, drawn anew each cycle.
    let loadSeconds: ClosedRange<Double>

    /// Returns what did not hold (empty when everything did).
    func run(log: (String) -> Void) async throws -> [String] {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(2), read: .seconds(10))
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        // Gateway calls go to the fake OpenAI, which accepts one key.
        let fakes = try await FakeProviders.start()
        let result: Result<[String], any Error>
        do {
            result = .success(try await run(http: http, fakes: fakes, log: log))
        } catch {
            result = .failure(error)
        }
        try? await http.shutdown()
        let unexpected = fakes.unexpected.map { "the fake provider did not expect: \($0)" }
        await fakes.stop()
        return try result.get() + unexpected
    }

    private func run(http: HTTPClient, fakes: FakeProviders, log: (String) -> Void) async throws -> [String] {
        let ledger = Ledger(clients: clients)
        let providers = RotatingIntegration.environment(fakes).merging([
            "KEYHAVEN_PROVIDER_OPENAI_URL": fakes.baseURL.absoluteString + "/openai",
            "KEYHAVEN_EGRESS_ALLOW_PRIVATE": "true",
        ]) { $1 }
        var rotating: RotatingIntegration?
        var serverOutput = ""
        var problems: [String] = []
        for cycle in 1...cycles {
            let port = try FakeProviders.freePort()
            let server = try await deployment.serve(port: port, extra: providers)
            let base = URL(string: "http://127.0.0.1:\(port)")!
            let vault = KeyhavenClient(
                baseURL: base, token: deployment.personalToken, httpClient: http, timeout: .seconds(10))
            let backend = KeyhavenClient(
                baseURL: base, token: deployment.serviceToken, httpClient: http, timeout: .seconds(10))
            // What the previous kill left is checked through this server before new load starts.
            if cycle > 1 {
                try await ledger.check(vault: vault, backend: backend, alsoKnown: [RotatingIntegration.name])
            }
            if rotating == nil {
                rotating = try await RotatingIntegration.create(base: base, token: deployment.personalToken, http: http)
            }
            let rotated = rotating!

            let gateway = Gateway(base: base, token: deployment.serviceToken, http: http, key: FakeProviders.openAIKey)
            let stop = StopFlag()
            let delay = Double.random(in: loadSeconds)
            let duringBackup = cycle % 3 == 0
            await withTaskGroup(of: Void.self) { group in
                for client in 0..<clients {
                    group.addTask {
                        await ledger.run(client: client, vault: vault, backend: backend, gateway: gateway, stop: stop)
                    }
                }
                group.addTask {
                    let found = await rotated.keepRotating(
                        base: base, token: deployment.personalToken, http: http, stop: stop)
                    for problem in found { ledger.failures.add(problem) }
                }
                group.addTask {
                    if duringBackup {
                        // Every third kill waits for a scheduled backup to be in the middle of its file.
                        for _ in 0..<3000 where deployment.backupFiles.temporary.isEmpty {
                            try? await Task.sleep(for: .milliseconds(1))
                        }
                    } else {
                        try? await Task.sleep(for: .seconds(delay))
                    }
                    server.signal(SIGKILL)
                    // Clients still waiting learn it from their connections; none keeps going.
                    try? await Task.sleep(for: .seconds(1))
                    stop.set()
                }
            }
            let status = await server.wait(timeout: .seconds(20))
            serverOutput += server.stdout + server.stderr
            let (creates, present, inFlight) = ledger.counts
            let backups = deployment.backupFiles
            let moment = duringBackup ? "during a backup" : String(format: "after %.2f s", delay)
            log(
                "cycle \(cycle): killed \(moment) (status \(status)) with \(inFlight) writes in flight and "
                    + "\(backups.temporary.count) backups being written; so far \(creates) creates acknowledged, "
                    + "\(present) present, \(ledger.answeredReads.values.reduce(0, +)) credential reads and "
                    + "\(ledger.gatewayAnswered.load(ordering: .relaxed)) gateway calls answered")
            let atRest = try await deployment.checkAtRest(
                answeredReads: ledger.answeredReads, gatewayAnswered: ledger.gatewayAnswered.load(ordering: .relaxed))
            problems += atRest.map { "cycle \(cycle): \($0)" }
            problems += ledger.failures.take().map { "cycle \(cycle): \($0)" }
            if !problems.isEmpty { break }
        }
        if problems.isEmpty {
            // The last kill is checked through one more server, which is then stopped normally.
            let port = try FakeProviders.freePort()
            let server = try await deployment.serve(port: port, extra: providers)
            let base = URL(string: "http://127.0.0.1:\(port)")!
            let backend = KeyhavenClient(baseURL: base, token: deployment.serviceToken, httpClient: http)
            try await ledger.check(
                vault: KeyhavenClient(baseURL: base, token: deployment.personalToken, httpClient: http),
                backend: backend, alsoKnown: [RotatingIntegration.name])
            if let rotating {
                problems += try await rotating.check(
                    database: deployment.database, fakes: fakes, backend: backend, log: log)
            }
            // What killed backups left behind is cleared by the running server.
            for _ in 0..<100 where !deployment.backupFiles.temporary.isEmpty {
                try await Task.sleep(for: .milliseconds(100))
            }
            let leftovers = deployment.backupFiles.temporary.count
            if leftovers > 0 { problems.append("\(leftovers) temporary backup files left 10 s after the last restart") }
            if deployment.backupFiles.finished.isEmpty { problems.append("no scheduled backup was ever finished") }
            serverOutput += await stop([server])
            problems += ledger.failures.take()
            problems += try await deployment.checkAtRest(
                answeredReads: ledger.answeredReads, gatewayAnswered: ledger.gatewayAnswered.load(ordering: .relaxed))
        }
        let leaked = leakedKeys(ledger.keys, in: serverOutput)
        if !leaked.isEmpty { problems.append("\(leaked.count) credentials appear in the server's output") }
        if ledger.counts.creates == 0 { problems.append("no create was acknowledged: the load never ran") }
        return problems
    }
}
