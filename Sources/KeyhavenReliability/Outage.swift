import AsyncHTTPClient
import Foundation
import KeyhavenClient
import KeyhavenTestSupport
import Synchronization

/// The database taken away under load and given back, without restarting the server: PostgreSQL stopped and
/// started again, or hung (its processes stopped with SIGSTOP, so connections stay open and nothing answers), or
/// SQLite's files unable to grow (a file-size limit set on the server process, which turns every write that would
/// grow them into an I/O error, as a full disk does). Every request in flight while it is away must answer within
/// ``answerWithin`` (a 503 where it needs the database), `/readyz` must say so; once it is back the server must
/// serve again within 5 s by itself, and nothing acknowledged may be lost.
struct Outage: Sendable {
    let deployment: Deployment
    /// Takes the database away (run with the server's process id).
    let breakDatabase: @Sendable (Int32) async throws -> Void
    /// Gives it back.
    let repairDatabase: @Sendable (Int32) async throws -> Void
    let clients: Int
    let checkReadiness: Bool
    /// How long the database stays away.
    var length: Duration = .seconds(3)
    /// The longest a request may take while it is away.
    var answerWithin: Duration = .seconds(2)
    /// Settings the server runs with, beside the deployment's.
    var serverEnvironment: [String: String] = [:]

    struct Call {
        var started: ContinuousClock.Instant
        var seconds: Double
        var outcome: String
    }

    /// What the clients saw, and what was acknowledged to them.
    final class Record: Sendable {
        let calls = Mutex<[Call]>([])
        /// Acknowledged creates: name, id, key.
        let created = Mutex<[(name: String, id: UUID, key: String)]>([])
        let reads = Mutex<[UUID: Int]>([:])
        let counter = Atomic<Int>(0)
        /// `/readyz` asked, and what it answered (0: no answer).
        let readiness = Mutex<[(started: ContinuousClock.Instant, status: Int)]>([])
        /// The longest answer to a request in flight while the database was away, in seconds.
        let slowest = Mutex<Double>(0)
    }

    func run(log: (String) -> Void) async throws -> [String] {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(2), read: .seconds(10))
        // A connection each for the clients and `/readyz`, which must not wait for theirs when the database hangs.
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = clients + 1
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let port = try FakeProviders.freePort()
        let server = try await deployment.serve(port: port, extra: serverEnvironment)
        var problems: [String] = []
        do {
            problems = try await run(server: server, port: port, http: http, log: log)
        } catch {
            problems.append("stopped early: \(error)")
        }
        let output = await stop([server])
        try? await http.shutdown()
        let keys = record.created.withLock { $0.map(\.key) }
        return problems + (leakedKeys(keys, in: output).isEmpty ? [] : ["a credential appears in the server's output"])
    }

    private let record = Record()

    private func run(server: KeyhavenBinary.Running, port: Int, http: HTTPClient, log: (String) -> Void) async throws
        -> [String]
    {
        let base = URL(string: "http://127.0.0.1:\(port)")!
        let vault = KeyhavenClient(
            baseURL: base, token: deployment.personalToken, httpClient: http, timeout: .seconds(10))
        let backend = KeyhavenClient(
            baseURL: base, token: deployment.serviceToken, httpClient: http, timeout: .seconds(10))
        let pid = server.processIdentifier
        let stop = StopFlag()
        let clock = ContinuousClock()
        var problems: [String] = []
        var broken = clock.now
        var repaired = clock.now
        await withTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                group.addTask { await load(client: client, vault: vault, backend: backend, stop: stop) }
            }
            group.addTask { await probeReadiness(base: base, http: http, stop: stop) }
            var away = false
            do {
                try await Task.sleep(for: .seconds(1))
                broken = clock.now
                try await breakDatabase(pid)
                away = true
                log("database taken away")
                try await Task.sleep(for: length)
                try await repairDatabase(pid)
                away = false
                repaired = clock.now
                log("database given back")
                try await Task.sleep(for: .seconds(6))
            } catch {
                log("the outage could not be staged: \(error)")
                problems.append("the outage could not be staged: \(error)")
                if away { try? await repairDatabase(pid) }
            }
            stop.set()
        }
        let calls = record.calls.withLock { $0 }
        // Every call in flight while the database was away, also those that started just before.
        let during = calls.filter { $0.started < repaired && $0.started + .seconds($0.seconds) >= broken }
        let slow = during.filter { .seconds($0.seconds) > answerWithin }
        let unclear = during.filter { !["ok", "503"].contains($0.outcome) }
        let refused = during.filter { $0.outcome == "503" }.count
        let readiness = record.readiness.withLock { $0 }.filter { $0.started >= broken && $0.started < repaired }
            .map(\.status)
        let slowest = during.map(\.seconds).max() ?? 0
        record.slowest.withLock { $0 = slowest }
        log(
            "\(calls.count) calls; while the database was away: \(during.count), \(refused) answered 503, slowest "
                + String(format: "%.3f s", slowest) + "; /readyz answered \(readiness)")
        if refused == 0 {
            problems.append("no call was refused while the database was away: the outage did not happen")
        }
        if !slow.isEmpty {
            problems.append("\(slow.count) calls took over \(answerWithin) while the database was away")
        }
        if !unclear.isEmpty {
            problems.append("\(unclear.count) calls failed otherwise than with a 503: \(Set(unclear.map(\.outcome)))")
        }
        if checkReadiness, !readiness.contains(503) {
            problems.append("/readyz never reported the database missing: \(readiness)")
        }
        // Recovery: from the first call that succeeded after the repair, everything succeeds.
        let after = calls.filter { $0.started >= repaired }.sorted { $0.started < $1.started }
        guard let first = after.firstIndex(where: { $0.outcome == "ok" }) else {
            problems.append("nothing succeeded after the database came back")
            return problems
        }
        let recovery = (after[first].started + .seconds(after[first].seconds) - repaired)
        log("first success \(recovery) after the database came back")
        if recovery > .seconds(5) { problems.append("the server took \(recovery) to recover (over 5 s)") }
        let failedLater = after[first...].filter {
            $0.outcome != "ok" && $0.started > after[first].started + .seconds(1)
        }
        if !failedLater.isEmpty {
            problems.append("\(failedLater.count) calls failed more than 1 s after the recovery")
        }
        if !server.isRunning { problems.append("the server stopped") }

        // Nothing acknowledged is lost: every create is there with its key. A server that no longer answers would
        // make each read wait for the client's timeout, so the reading stops at the fifth failure.
        var lost: [String] = []
        for (name, id, key) in record.created.withLock({ $0 }) where lost.count < 5 {
            do {
                let read = try await backend.credentials(for: id)
                record.reads.withLock { $0[id, default: 0] += 1 }
                if read.credentials != .openAI(apiKey: key) { lost.append("\(name) holds other credentials") }
            } catch {
                lost.append("\(name), acknowledged, cannot be read back: \(error)")
            }
        }
        return problems + lost
    }

    /// One client: creates an integration, then reads its credentials, and again, recording every call.
    private func load(client: Int, vault: KeyhavenClient, backend: KeyhavenClient, stop: StopFlag) async {
        var own: [(id: UUID, key: String)] = []
        let clock = ContinuousClock()
        while !stop.isSet {
            let started = clock.now
            var outcome = "ok"
            do {
                // At most 100 integrations each, so reading every one back afterwards stays quick.
                if own.isEmpty || (own.count < 100 && Bool.random()) {
                    let key = Ledger.newKey()
                    let name = "outage-\(client)-\(record.counter.wrappingAdd(1, ordering: .relaxed).newValue)"
                    let made = try await vault.createIntegration(
                        NewIntegration(name: name, credentials: .openAI(apiKey: key)))
                    own.append((made.id, key))
                    record.created.withLock { $0.append((name, made.id, key)) }
                } else {
                    let (id, key) = own.randomElement()!
                    let read = try await backend.credentials(for: id)
                    record.reads.withLock { $0[id, default: 0] += 1 }
                    if read.credentials != .openAI(apiKey: key) { outcome = "wrong credentials" }
                }
            } catch KeyhavenClientError.unavailable {
                outcome = "503"
            } catch {
                outcome = "\(error)"
            }
            let seconds = (clock.now - started) / .seconds(1)
            record.calls.withLock { $0.append(Call(started: started, seconds: seconds, outcome: outcome)) }
            if outcome != "ok" { try? await Task.sleep(for: .milliseconds(20)) }
        }
    }

    /// Asks `/readyz` every half second, recording each answer.
    private func probeReadiness(base: URL, http: HTTPClient, stop: StopFlag) async {
        let url = base.appendingPathComponent("readyz").absoluteString
        // Bounded however the stop flag is set: at most 10 minutes of asking.
        for _ in 0..<1200 where !stop.isSet {
            let started = ContinuousClock.now
            let ready = try? await request(.GET, url, http: http, timeout: .seconds(10))
            record.readiness.withLock { $0.append((started, ready?.status ?? 0)) }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    var answeredReads: [UUID: Int] { record.reads.withLock { $0 } }
    /// The longest answer to a request in flight while the database was away, in seconds (after ``run(log:)``).
    var slowest: Double { record.slowest.withLock { $0 } }
}
