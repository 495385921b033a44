import AsyncHTTPClient
import Foundation
import KeyhavenApp
import KeyhavenClient
import KeyhavenCore
import KeyhavenDatabase
import KeyhavenStorage
import KeyhavenTestSupport
import NIOCore
import SQLKit
import Synchronization

/// Two `keyhaven serve` processes on one PostgreSQL, with the requests alternating between them: a session made
/// on one works on the other, a new integration is verified once (both run the verification worker), the check,
/// gateway request and login limits count across both, and a master-key rotation run while both serve credential
/// reads loses none of them.
struct Instances {
    let deployment: Deployment
    /// Gateway calls answered 200 (each may leave one usage event).
    let gatewayAnswered = Counter()
    /// The checks one user may start per window (`KEYHAVEN_CHECK_LIMIT`).
    static let checkLimit = 6

    func run(log: (String) -> Void) async throws -> [String] {
        let fakes = try await FakeProviders.start()
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(2), read: .seconds(30))
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let seeded = try await seed(count: 40)
        let extra = [
            "KEYHAVEN_VERIFICATION_WORKER": "true", "KEYHAVEN_EGRESS_ALLOW_PRIVATE": "true",
            "KEYHAVEN_PROVIDER_OPENAI_URL": fakes.baseURL.absoluteString + "/openai",
            "KEYHAVEN_CHECK_LIMIT": String(Self.checkLimit),
        ]
        let ports = (try FakeProviders.freePort(), try FakeProviders.freePort())
        var servers: [KeyhavenBinary.Running] = []
        var problems: [String] = []
        do {
            servers.append(try await deployment.serve(port: ports.0, extra: extra))
            servers.append(try await deployment.serve(port: ports.1, extra: extra))
            let bases = [ports.0, ports.1].map { URL(string: "http://127.0.0.1:\($0)")! }
            problems = try await checks(bases: bases, seeded: seeded, http: http, fakes: fakes, log: log)
        } catch {
            problems.append("stopped early: \(error)")
        }
        let output = await stop(servers)
        if !leakedKeys(seeded.map(\.key), in: output).isEmpty {
            problems.append("a credential appears in a server's output")
        }
        problems += fakes.unexpected.map { "the fake providers did not expect: \($0)" }
        try? await http.shutdown()
        await fakes.stop()
        return problems
    }

    /// Integrations written through the library before the servers start.
    private func seed(count: Int) async throws -> [(id: UUID, key: String)] {
        let runtime = try await KeyhavenRuntime.open(
            try deployment.configuration, allowKeyringCreation: false, logger: Deployment.quiet)
        do {
            let owner = try await runtime.users.find(email: Deployment.email)!.0.id
            var seeded: [(UUID, String)] = []
            for index in 0..<count {
                let key = Ledger.newKey()
                let integration = try await runtime.integrations.create(
                    ownerID: owner, name: "seeded \(index)", type: .openai, config: [:], credentials: .apiKey(key),
                    actor: .system)
                seeded.append((integration.id, key))
            }
            await runtime.shutdown()
            return seeded
        } catch {
            await runtime.shutdown()
            throw error
        }
    }

    private func checks(
        bases: [URL], seeded: [(id: UUID, key: String)], http: HTTPClient, fakes: FakeProviders, log: (String) -> Void
    ) async throws -> [String] {
        var problems: [String] = []
        let vaults = bases.map { KeyhavenClient(baseURL: $0, token: deployment.personalToken, httpClient: http) }
        let backends = bases.map { KeyhavenClient(baseURL: $0, token: deployment.serviceToken, httpClient: http) }

        // A session made on the first works on the second.
        let signedIn = try await login(on: bases[0], password: Deployment.password, http: http)
        let cookie = signedIn.headers["set-cookie"].first.flatMap { $0.split(separator: ";").first.map(String.init) }
        if signedIn.status != 200 || cookie == nil {
            problems.append("login on the first server answered \(signedIn.status)")
        } else {
            let status = try await request(
                .GET, bases[1].appendingPathComponent("api/integrations").absoluteString, headers: ["Cookie": cookie!],
                http: http
            ).status
            if status != 200 { problems.append("the first server's session answered \(status) on the second") }
            log("a session made on the first server: \(status) on the second")
        }

        // A new integration is verified once, though both servers run the verification worker.
        let listingsBefore = fakes.openAIListings
        let created = try await vaults[0].createIntegration(
            NewIntegration(name: "verified once", credentials: .openAI(apiKey: FakeProviders.openAIKey)))
        var status = "verifying"
        for _ in 0..<200 where status == "verifying" {
            try await Task.sleep(for: .milliseconds(100))
            status = try await vaults[1].integration(created.id).status.rawValue
        }
        try await Task.sleep(for: .seconds(2))
        let verifications = fakes.openAIListings - listingsBefore
        log("a new integration: \(status) after \(verifications) verification(s)")
        if status != "connected" { problems.append("the new integration is \(status), not connected") }
        if verifications != 1 { problems.append("the new integration was verified \(verifications) times") }

        problems += try await rotationUnderReads(backends: backends, seeded: seeded, log: log)

        // The check limit counts across both: the create above was one check; tests alternate between the servers.
        var accepted = 0
        var refused = false
        for attempt in 0..<(Self.checkLimit + 2) {
            do {
                _ = try await vaults[attempt % 2].testIntegration(created.id)
                accepted += 1
            } catch KeyhavenClientError.rateLimited {
                refused = true
                break
            }
        }
        log("checks: \(accepted) tests accepted across both servers after the create, then refused: \(refused)")
        if accepted != Self.checkLimit - 1 || !refused {
            problems.append(
                "\(accepted) tests were accepted after one create with a limit of \(Self.checkLimit) checks")
        }

        problems += try await requestLimit(on: created.id, bases: bases, http: http, fakes: fakes, log: log)

        // Failed logins count across both: 10 per account and address, then 429.
        var statuses: [Int] = []
        for attempt in 0..<11 {
            statuses.append(try await login(on: bases[attempt % 2], password: "not the password", http: http).status)
        }
        log("failed logins alternating between the servers: \(statuses)")
        if statuses != Array(repeating: 401, count: 10) + [429] {
            problems.append("failed logins across both servers answered \(statuses), not ten 401s then 429")
        }
        return problems
    }

    /// Runs `keyhaven keys rotate` while 8 clients read credentials from both servers, then checks that every
    /// read succeeded with the right key, every secret is wrapped by the new key, and both servers open what the
    /// other writes after the rotation.
    private func rotationUnderReads(
        backends: [KeyhavenClient], seeded: [(id: UUID, key: String)], log: (String) -> Void
    ) async throws -> [String] {
        var problems: [String] = []
        let stop = StopFlag()
        let failures = Failures()
        let reads = Counter()
        let rotation = try await withThrowingTaskGroup(of: (Int32, String)?.self) { group in
            for client in 0..<8 {
                group.addTask {
                    var turn = client
                    while !stop.isSet {
                        turn += 1
                        let (id, key) = seeded[turn % seeded.count]
                        do {
                            let read = try await backends[turn % 2].credentials(for: id)
                            if read.credentials != .openAI(apiKey: key) {
                                failures.add("a read returned other credentials")
                            }
                            reads.add()
                        } catch {
                            failures.add("a read failed during the rotation: \(error)")
                        }
                    }
                    return nil
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            let result = try await deployment.binary.run(
                ["keys", "rotate"], environment: deployment.environment, in: deployment.directory.path)
            try await Task.sleep(for: .milliseconds(500))
            stop.set()
            var outcome: (Int32, String)?
            for try await value in group { outcome = outcome ?? value }
            return outcome ?? (result.status, result.stdout + result.stderr)
        }
        let failed = failures.take()
        log(
            "key rotation: exit \(rotation.0) while \(reads.value) "
                + "credential reads were answered, \(failed.count) failed"
        )
        if rotation.0 != 0 { problems.append("keyhaven keys rotate exited \(rotation.0): \(rotation.1.suffix(500))") }
        problems += Set(failed).sorted().prefix(5).map { "during the key rotation: \($0)" }

        let store = try await Database.open(deployment.database, logger: Deployment.quiet)
        let unwrapped = try await store.withConnection { sql in
            try await sql.raw(
                """
                SELECT CAST(COUNT(*) AS BIGINT) AS n FROM secrets WHERE \
                kek_id <> (SELECT id FROM keyring_keys WHERE active)
                """
            ).first()?.decode(column: "n", as: Int.self) ?? -1
        }
        await store.shutdown()
        if unwrapped != 0 { problems.append("\(unwrapped) secrets are not wrapped by the new active key") }
        return problems
    }

    /// A limit of 3 gateway requests a minute on the integration: of 4 requests alternating between the servers, the
    /// fourth is refused with 429 and never reaches the provider.
    private func requestLimit(
        on id: UUID, bases: [URL], http: HTTPClient, fakes: FakeProviders, log: (String) -> Void
    ) async throws -> [String] {
        let path = "integrations/\(id.uuidString.lowercased())"
        let set = try await request(
            .PUT, bases[0].appendingPathComponent("api/\(path)/limits").absoluteString,
            bearer: deployment.personalToken, json: Data(#"{"requests_per_minute":3}"#.utf8), http: http
        ).status
        guard set == 200 else { return ["setting the request limit answered \(set)"] }
        // The counters are per calendar minute: start well inside one.
        let second = Int(Date().timeIntervalSince1970) % 60
        if second > 45 { try await Task.sleep(for: .seconds(61 - second)) }
        let callsBefore = fakes.modelCalls.count
        var statuses: [Int] = []
        for attempt in 0..<4 {
            let gateway = "gateway/\(id.uuidString.lowercased())/v1/chat/completions"
            let status = try await request(
                .POST, bases[attempt % 2].appendingPathComponent(gateway).absoluteString,
                bearer: deployment.serviceToken,
                json: Data(#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#.utf8), http: http
            ).status
            statuses.append(status)
            if status == 200 { gatewayAnswered.add() }
        }
        let reached = fakes.modelCalls.count - callsBefore
        log(
            "gateway requests alternating between the servers, 3 a "
                + "minute allowed: \(statuses); \(reached) reached the provider"
        )
        return statuses == [200, 200, 200, 429] && reached == 3
            ? []
            : ["with a limit of 3 requests a minute across both servers: \(statuses), \(reached) reached the provider"]
    }
}

/// `POST /api/auth/login` as the deployment's user with `password`.
private func login(on base: URL, password: String, http: HTTPClient) async throws -> Answer {
    try await request(
        .POST, base.appendingPathComponent("api/auth/login").absoluteString,
        json: try JSONSerialization.data(withJSONObject: ["email": Deployment.email, "password": password]),
        http: http, timeout: .seconds(30))
}

/// A count shared by concurrent tasks.
final class Counter: Sendable {
    private let count = Mutex<Int>(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
