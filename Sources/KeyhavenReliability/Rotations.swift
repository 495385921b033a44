import AsyncHTTPClient
import Foundation
import KeyhavenClient
import KeyhavenCore
import KeyhavenDatabase
import KeyhavenStorage
import KeyhavenTestSupport
import NIOCore
import NIOHTTP1
import SQLKit

/// An AWS integration whose keys are rotated again and again (no grace periods) while the server is killed: after
/// the last restart its rotation finishes, the fake IAM holds exactly one key for the user, active, and it is the
/// one the integration's credentials read back as.
struct RotatingIntegration: Sendable {
    static let name = "rotating aws"
    let id: UUID

    /// The settings that let the server rotate against the fakes.
    static func environment(_ fakes: FakeProviders) -> [String: String] {
        [
            "KEYHAVEN_VERIFICATION_WORKER": "true", "KEYHAVEN_ROTATION_INTERVAL": "1",
            "KEYHAVEN_PROVIDER_AWS_URL": fakes.baseURL.absoluteString + "/aws",
            "KEYHAVEN_PROVIDER_AWS_IAM_URL": fakes.managementURLs.awsIAM.absoluteString,
        ]
    }

    /// Creates the integration through the API with the key the fake IAM starts with.
    static func create(base: URL, token: String, http: HTTPClient) async throws -> RotatingIntegration {
        let body: [String: Any] = [
            "name": name, "type": "aws",
            "credentials": [
                "access_key_id": FakeProviders.awsAccessKeyID, "secret_access_key": FakeProviders.awsSecret,
            ],
            "rotation": ["mode": "automatic", "every_days": 90, "grace_hours": 0],
        ]
        let created = try await request(
            .POST, base.appendingPathComponent("api/integrations").absoluteString, bearer: token,
            json: try JSONSerialization.data(withJSONObject: body), http: http)
        guard created.status == 201,
            let object = try JSONSerialization.jsonObject(with: created.body) as? [String: Any],
            let id = (object["id"] as? String).flatMap(UUID.init(uuidString:))
        else { throw TestSetupError("creating the AWS integration answered \(created.status)") }
        return RotatingIntegration(id: id)
    }

    /// Asks for a rotation every 300 ms (one already running answers 409) until `stop` or the server is gone.
    func keepRotating(base: URL, token: String, http: HTTPClient, stop: StopFlag) async -> [String] {
        let url = base.appendingPathComponent("api/integrations/\(id.uuidString.lowercased())/rotate").absoluteString
        while !stop.isSet {
            guard let status = try? await request(.POST, url, bearer: token, http: http).status else { return [] }
            if ![202, 409].contains(status), !stop.isSet { return ["asking for a rotation answered \(status)"] }
            try? await Task.sleep(for: .milliseconds(300))
        }
        return []
    }

    /// Waits (at most 60 s) for every rotation to finish, then compares the fake IAM with the stored credentials.
    func check(
        database location: DatabaseLocation, fakes: FakeProviders, backend: KeyhavenClient, log: (String) -> Void
    ) async throws -> [String] {
        let database = try await Database.open(location, logger: Deployment.quiet)
        var states: [RotationState] = []
        for _ in 0..<600 {
            states = try await database.withConnection { sql in
                try await sql.raw("SELECT state FROM rotations WHERE integration_id = \(bind: id)").all()
                    .compactMap { RotationState(rawValue: try $0.decode(column: "state", as: String.self)) }
            }
            if states.allSatisfy(\.isFinished) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        await database.shutdown()
        var problems: [String] = []
        let done = states.filter { $0 == .done }.count
        if !states.allSatisfy(\.isFinished) { problems.append("a rotation did not finish: \(states)") }
        if done == 0 { problems.append("no rotation finished among \(states.count)") }
        let keys = fakes.awsKeys()
        log(
            "AWS rotations: \(done) done, \(states.filter { $0 == .failed }.count) "
                + "failed; IAM holds \(keys.count) key(s)"
        )
        let stored = try await backend.credentials(for: id).credentials
        guard case .aws(let credentials) = stored, keys.count == 1, keys[0].active,
            keys[0].id == credentials.accessKeyID
        else { return problems + ["after \(done) rotations IAM holds \(keys) and the integration another key"] }
        return problems
    }
}
