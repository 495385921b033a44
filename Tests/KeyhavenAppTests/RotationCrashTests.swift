import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenProviders
import KeyhavenStorage
import KeyhavenTestSupport
import Logging
import SQLKit
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A real `keyhaven serve` killed with SIGKILL in the middle of an AWS rotation, after each step in turn.
@Suite("Rotation under SIGKILL", .serialized)
struct RotationCrashTests {
    /// The rotation's recorded step, read from the database file as another process would.
    func state(of id: UUID, in path: String) async throws -> RotationState? {
        let database = try await Database.open(
            .sqlite(path: path), logger: Logger(label: "probe", factory: { _ in SwiftLogNoOpLogHandler() }))
        defer { Task { await database.shutdown() } }
        return try await database.withConnection { sql in
            try await sql.raw("SELECT state FROM rotations WHERE id = \(bind: id)").first()
                .flatMap { RotationState(rawValue: try $0.decode(column: "state", as: String.self)) }
        }
    }

    func waitFor(_ id: UUID, in path: String, seconds: Int, _ condition: (RotationState?) -> Bool) async throws -> Bool
    {
        for _ in 0..<(seconds * 20) {
            if condition(try await state(of: id, in: path)) { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    @Test(
        """
        killed after each step of an AWS rotation, the next start \
        finishes it and IAM ends with exactly one active key
        """,
        arguments: [RotationState.creating, .stored, .current, .deactivated])
    func killedAfterStep(step: RotationState) async throws {
        let binary = try KeyhavenBinary()
        // Every provider answer takes 1.5 s: the window in which the process is killed after the step was recorded.
        let fakes = try await FakeProviders.start(delay: .milliseconds(1500))
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.databasePath
        let runtime = try await directory.openRuntime()
        let owner = try await Fixtures.user(in: runtime.database)
        let integration = try await runtime.integrations.create(
            ownerID: owner, name: "aws", type: .aws, config: [:],
            credentials: .aws(
                accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret, sessionToken: nil),
            actor: .system)
        _ = try await runtime.rotations.setPolicy(
            RotationPolicy(mode: .automatic, everyDays: 90, graceHours: 0), id: integration.id, ownerID: owner,
            actor: .system)
        let rotation = try await runtime.rotations.request(id: integration.id, ownerID: owner, actor: .system)
        await runtime.shutdown()

        let urls = fakes.managementURLs
        let root = fakes.baseURL.absoluteString
        let environment = directory.serveEnvironment.merging([
            "KEYHAVEN_EGRESS_ALLOW_PRIVATE": "true", "KEYHAVEN_ROTATION_INTERVAL": "1",
            "KEYHAVEN_PROVIDER_AWS_URL": "\(root)/aws", "KEYHAVEN_PROVIDER_AWS_IAM_URL": urls.awsIAM.absoluteString,
        ]) { $1 }
        let first = try binary.start(["serve"], environment: environment, in: directory.path)
        let reached = try await waitFor(rotation.id, in: path, seconds: 60) { $0 == step }
        first.signal(SIGKILL)
        #expect(await first.wait() == SIGKILL)
        #expect(reached, "the rotation never reached \(step): \(first.stderr.suffix(2000))")
        // What the provider was asked before the kill finishes there, as it would for a real provider.
        try await Task.sleep(for: .seconds(2))

        let second = try binary.start(["serve"], environment: environment, in: directory.path)
        let finished = try await waitFor(rotation.id, in: path, seconds: 90) { $0?.isFinished == true }
        second.signal(SIGTERM)
        _ = await second.wait()
        #expect(finished, "\(second.stderr.suffix(2000))")
        #expect(try await state(of: rotation.id, in: path) == .done)
        let keys = fakes.awsKeys()
        #expect(
            keys.count == 1 && keys.first?.active == true && keys.first?.id != FakeProviders.awsAccessKeyID,
            "after \(step): \(keys)")
        #expect(fakes.unexpected.isEmpty, "\(fakes.unexpected)")
        await fakes.stop()
    }
}
