import AsyncHTTPClient
import Foundation
import KeyhavenClient
import NIOCore
import Synchronization

/// What a client knows about one integration it works on: what the server acknowledged, and the one request that
/// was in flight when the server died (whose outcome the next check decides).
struct Tracked {
    enum Pending {
        case create(key: String)
        case replace(key: String)
        case delete
    }

    let name: String
    var id: UUID?
    /// The key of the last acknowledged create or replacement.
    var key: String?
    var deleted = false
    var pending: Pending?
    /// Credential reads answered 200.
    var reads = 0

    var isPresent: Bool { id != nil && !deleted }
}

/// What went wrong for concurrent clients, in the order it was seen.
final class Failures: Sendable {
    private let list = Mutex<[String]>([])

    func add(_ message: String) {
        list.withLock { $0.append(message) }
    }

    /// Everything so far, and forgets it.
    func take() -> [String] {
        list.withLock { list in
            defer { list = [] }
            return list
        }
    }
}

/// The clients of a crash run and what the server acknowledged to them. Each client works only on the
/// integrations it created, one request at a time, so each integration has at most one request in flight.
final class Ledger: Sendable {
    private let state = Mutex<[[Tracked]]>([])
    private let created = Atomic<Int>(0)
    /// Gateway calls answered 200, over the whole run.
    let gatewayAnswered = Atomic<Int>(0)
    /// What the clients saw go wrong.
    let failures = Failures()

    init(clients: Int) {
        state.withLock { $0 = Array(repeating: [], count: clients) }
    }

    /// Every key ever sent: none may appear in the server's output.
    var keys: [String] {
        state.withLock { clients in
            clients.flatMap { $0 }.flatMap { tracked -> [String] in
                var keys = tracked.key.map { [$0] } ?? []
                switch tracked.pending {
                case .create(let key), .replace(let key): keys.append(key)
                default: break
                }
                return keys
            }
        }
    }

    /// Credential reads answered 200, by integration, over the whole run.
    var answeredReads: [UUID: Int] {
        state.withLock { clients in
            var reads: [UUID: Int] = [:]
            for tracked in clients.flatMap({ $0 }) where tracked.reads > 0 {
                reads[tracked.id!, default: 0] += tracked.reads
            }
            return reads
        }
    }

    /// Creates acknowledged, integrations present, and writes in flight (unsettled) right now.
    var counts: (creates: Int, present: Int, inFlight: Int) {
        state.withLock { clients in
            let all = clients.flatMap { $0 }
            return (
                all.filter { $0.id != nil }.count, all.filter(\.isPresent).count, all.filter { $0.pending != nil }.count
            )
        }
    }

    fileprivate func with<T>(_ client: Int, _ body: (inout [Tracked]) -> T) -> T {
        state.withLock { body(&$0[client]) }
    }

    static func newKey() -> String {
        "sk-crash-" + (0..<24).map { _ in String("0123456789abcdef".randomElement()!) }.joined()
    }

    // MARK: Load

    /// Runs one client until `stop` is set or the server stops answering.
    func run(client: Int, vault: KeyhavenClient, backend: KeyhavenClient, gateway: Gateway, stop: StopFlag) async {
        while !stop.isSet {
            let present = with(client) { tracked in tracked.indices.filter { tracked[$0].isPresent } }
            // Integrations holding the key the fake provider accepts, for gateway calls.
            let usable = with(client) { tracked in present.filter { tracked[$0].key == gateway.key } }
            let roll = Int.random(in: 0..<100)
            do {
                if present.isEmpty || roll < 20 {
                    let name = "crash-\(client)-\(created.wrappingAdd(1, ordering: .relaxed).newValue)"
                    let key = roll < 5 ? gateway.key : Self.newKey()
                    let index = with(client) { tracked in
                        tracked.append(Tracked(name: name, pending: .create(key: key)))
                        return tracked.count - 1
                    }
                    let integration = try await vault.createIntegration(
                        NewIntegration(name: name, credentials: .openAI(apiKey: key)))
                    with(client) {
                        $0[index].id = integration.id
                        $0[index].key = key
                        $0[index].pending = nil
                    }
                } else if roll < 40 {
                    let index = present.randomElement()!
                    let (id, key) = with(client) { tracked in
                        let key = Self.newKey()
                        tracked[index].pending = .replace(key: key)
                        return (tracked[index].id!, key)
                    }
                    _ = try await vault.updateIntegration(id, IntegrationUpdate(credentials: .openAI(apiKey: key)))
                    with(client) {
                        $0[index].key = key
                        $0[index].pending = nil
                    }
                } else if roll < 50 {
                    let index = present.randomElement()!
                    let id = with(client) { tracked in
                        tracked[index].pending = .delete
                        return tracked[index].id!
                    }
                    try await vault.deleteIntegration(id)
                    with(client) {
                        $0[index].deleted = true
                        $0[index].pending = nil
                    }
                } else if roll < 60, let index = usable.randomElement() {
                    let status = try await gateway.call(with(client) { $0[index].id! })
                    if status == 200 {
                        gatewayAnswered.wrappingAdd(1, ordering: .relaxed)
                    } else {
                        failures.add("a gateway call answered \(status)")
                    }
                } else {
                    let index = present.randomElement()!
                    let (id, expected) = with(client) { ($0[index].id!, $0[index].key!) }
                    let read = try await backend.credentials(for: id)
                    with(client) { $0[index].reads += 1 }
                    if read.credentials != .openAI(apiKey: expected) {
                        failures.add("a credential read of \(id) returned other credentials")
                    }
                }
            } catch KeyhavenClientError.transport, KeyhavenClientError.unavailable {
                return  // the server is gone (or going): what was in flight stays pending
            } catch {
                if !stop.isSet { failures.add("client \(client): unexpected answer \(error)") }
                return
            }
        }
    }

    // MARK: Checks after a restart

    /// Compares what the restarted server holds with what was acknowledged, settles each request that was in flight
    /// by what the server has, and reads every present integration's credentials back.
    /// - Parameter alsoKnown: names of integrations made outside the clients.
    func check(vault: KeyhavenClient, backend: KeyhavenClient, alsoKnown: Set<String> = []) async throws {
        var stored: [String: UUID] = [:]
        var cursor: String?
        repeat {
            let page = try await vault.integrations(limit: 200, cursor: cursor)
            for integration in page.integrations { stored[integration.name] = integration.id }
            cursor = page.nextCursor
        } while cursor != nil
        let known = alsoKnown.union(state.withLock { $0.flatMap { $0.map(\.name) } })
        for name in stored.keys where !known.contains(name) { failures.add("an integration nobody created: \(name)") }
        // Each client's integrations are read back by a task of their own.
        let listed = stored
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<state.withLock({ $0.count }) {
                group.addTask { try await self.check(client: client, stored: listed, backend: backend) }
            }
            try await group.waitForAll()
        }
    }

    private func check(client: Int, stored: [String: UUID], backend: KeyhavenClient) async throws {
        for index in with(client, { $0.indices }) {
            let tracked = with(client) { $0[index] }
            let found = stored[tracked.name]
            var expected: Set<String> = []
            switch tracked.pending {
            case .create(let key):
                // Never acknowledged: either committed whole or not at all.
                guard let found else {
                    with(client) { $0[index].pending = nil }
                    continue
                }
                with(client) { $0[index].id = found }
                expected = [key]
            case .replace(let key):
                expected = [tracked.key!, key]
            case .delete:
                if found == nil {
                    with(client) {
                        $0[index].deleted = true
                        $0[index].pending = nil
                    }
                    continue
                }
                expected = [tracked.key!]
            case nil:
                if tracked.deleted {
                    if found != nil { failures.add("\(tracked.name): deleted (acknowledged) but still there") }
                    continue
                }
                guard tracked.id != nil else { continue }
                expected = [tracked.key!]
            }
            guard let found, found == with(client, { $0[index].id }) else {
                failures.add("\(tracked.name): acknowledged but missing after the restart")
                continue
            }
            let read = try await backend.credentials(for: found)
            guard case .openAI(let key, _, _) = read.credentials, expected.contains(key) else {
                failures.add("\(tracked.name): the credentials read back are not the ones sent")
                continue
            }
            with(client) {
                $0[index].key = key
                $0[index].pending = nil
                $0[index].reads += 1
            }
        }
    }
}

/// Chat completions through the server's gateway, with the service token.
struct Gateway: Sendable {
    let base: URL
    let token: String
    let http: HTTPClient
    /// The key the fake provider accepts.
    let key: String

    /// Sends one chat completion for integration `id` and returns the status.
    ///
    /// - Throws: `KeyhavenClientError.transport` when the server does not answer.
    func call(_ id: UUID) async throws -> Int {
        var request = HTTPClientRequest(
            url: base.appendingPathComponent("gateway/\(id.uuidString.lowercased())/v1/chat/completions").absoluteString
        )
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: #"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#))
        do {
            let response = try await http.execute(request, timeout: .seconds(10))
            _ = try await response.body.collect(upTo: 1 << 20)
            return Int(response.status.code)
        } catch {
            // No answer (a reset, a refused or timed-out connection): the server is gone, as for the client's calls.
            throw KeyhavenClientError.transport("\(type(of: error))")
        }
    }
}

/// Set once, when the clients of a cycle must stop.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}

/// The keys among `keys` (all of which start with `sk-`) that appear in `output`. The output is cut once into runs
/// of the characters a key is made of, and only the runs holding `sk-` are searched: a long run's output and
/// thousands of keys stay linear in time.
func leakedKeys(_ keys: [String], in output: String) -> [String] {
    let runs = output.split { !($0.isLetter || $0.isNumber || "-_~.".contains($0)) }
    let suspicious = runs.filter { $0.contains("sk-") }
    return keys.filter { key in suspicious.contains { $0.contains(key) } }
}
