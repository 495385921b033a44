import Foundation
import HTTPTypes
import KeyhavenApp
import KeyhavenCore
import KeyhavenDatabase
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import SQLKit
import Synchronization
import Testing

/// Many requests at once, as a backend under load sends them.
@Suite("Concurrent requests")
struct ConcurrencyTests {
    @Test(
        "a never-used token sent by 32 connections at once, beside credential reads, is answered every time",
        arguments: TestDatabase.all)
    func firstUseUnderLoad(kind: TestDatabase) async throws {
        try await APIHarness.with(kind) { api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            let service = try await api.serviceToken()
            let pat = try await api.personalToken(for: user, scopes: ["integrations:read"])
            let statuses = try await withThrowingTaskGroup(of: [Int].self) { group in
                for index in 0..<32 {
                    group.addTask {
                        var statuses: [Int] = []
                        for _ in 0..<4 {
                            let response =
                                index % 2 == 0
                                ? try await api.request(
                                    .get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
                                : try await api.request(.get, "/api/integrations/\(id)", auth: .bearer(pat.token))
                            statuses.append(Int(response.status.code))
                        }
                        return statuses
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(statuses.count == 128)
            // A stall shows as the pool's 10-second connection timeouts, answered 503.
            #expect(
                statuses.allSatisfy { $0 == 200 }, "\(Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count))")
            #expect(try await api.runtime.audit.verify().isIntact)
        }
    }

    @Test(
        """
        on SQLite, while another process holds the write lock and \
        writers wait for it, reads and first uses of tokens are answered
        """
    )
    func readsWhileWriterWaits() async throws {
        try await APIHarness.with(.sqlite) { api in
            let user = try await api.user()
            let id = try await api.openAIIntegration(for: user.session)
            let used = try await api.personalToken(for: user, scopes: ["integrations:read"])
            #expect(try await api.request(.get, "/api/integrations/\(id)", auth: .bearer(used.token)).status == .ok)
            let fresh = try await api.personalToken(for: user, scopes: ["integrations:read"])
            let writer = try await api.personalToken(for: user, scopes: ["integrations:write"])
            #expect(
                try await api.request(.get, "/api/integrations?limit=1", auth: .bearer(writer.token)).status
                    == .forbidden)

            // Another process (here another pool on the same file) takes SQLite's write lock and keeps it until
            // the reads are done, or 15 seconds.
            let other = try await Database.open(api.handle.location, logger: Logger(label: "other"))
            let locked = ManagedSignal()
            let readsDone = ManagedSignal()
            let holder = Task {
                try await other.transaction { sql in
                    try await sql.raw("UPDATE users SET email = email WHERE id = \(bind: user.id)").run()
                    locked.fire()
                    let deadline = ContinuousClock.now + .seconds(15)
                    while !readsDone.fired, ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(10))
                    }
                    return readsDone.fired
                }
            }
            while !locked.fired { try await Task.sleep(for: .milliseconds(5)) }
            // A create now waits for the lock on the writer's thread.
            let create = Task {
                try await api.request(
                    .post, "/api/integrations", auth: .bearer(writer.token),
                    json: ["name": "waits", "type": "openai", "credentials": "sk-waits-0000000000000000"])
            }
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<64 {
                    group.addTask {
                        let auth: TestAuth =
                            switch index % 3 {
                            case 0: .bearer(used.token)
                            case 1: .bearer(fresh.token)
                            default: user.session
                            }
                        return Int(try await api.request(.get, "/api/integrations/\(id)", auth: auth).status.code)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            readsDone.fire()
            #expect(statuses == Array(repeating: 200, count: 64))
            #expect(try await holder.value, "every read was answered while the lock was held")
            #expect(try await create.value.status == .created, "the waiting write goes through once the lock is free")
            await other.shutdown()
        }
    }
}
