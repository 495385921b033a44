import Foundation
import HTTPTypes
import KeyhavenApp
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import SQLKit
import Testing

/// Many requests at once, as a backend under load sends them.
@Suite("Concurrent requests")
struct ConcurrencyTests {
    @Test("a never-used token sent by 32 connections at once, beside credential reads, is answered every time", arguments: TestDatabase.all)
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
                            let response = index % 2 == 0
                                ? try await api.request(.get, "/api/integrations/\(id)/credentials", auth: .bearer(service.token))
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
            #expect(statuses.allSatisfy { $0 == 200 }, "\(Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count))")
            #expect(try await api.runtime.audit.verify().isIntact)
        }
    }
}
