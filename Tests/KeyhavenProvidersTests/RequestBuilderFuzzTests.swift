import AsyncHTTPClient
import Foundation
import KeyhavenCore
import KeyhavenTestSupport
import Testing

@testable import KeyhavenProviders

/// The verifiers' request builders, fed hostile stored values directly (as rows written before a rule was
/// tightened would be): every call returns an outcome; none traps.
@Suite("Request builders under hostile stored values", .serialized)
struct RequestBuilderFuzzTests {
    static let pem: String = {
        let der = Data([0x30, 0x82] + Array("keyhaven builder fuzz".utf8) + Array(repeating: 0x41, count: 80))
        return "-----BEGIN PRIVATE KEY-----\n\(der.base64EncodedString())\n-----END PRIVATE KEY-----\n"
    }()

    /// Credentials of `type` with `value` in slot `slot` (valid everywhere for slot -1); nil past the last slot.
    static func credentials(_ type: IntegrationType, slot: Int, _ value: String) -> Credentials? {
        func pick(_ index: Int, _ valid: String) -> String { index == slot ? value : valid }
        switch type.entry?.credential.kind {
        case nil:
            return nil
        case .apiKey?:
            return slot == 0 ? .apiKey(value) : slot == -1 ? .apiKey("sk-valid-key-000000000000") : nil
        case .awsKeys?:
            guard slot < 3 else { return nil }
            return .aws(
                accessKeyID: pick(0, "AKIAQWERTYUIOPASDFGH"),
                secretAccessKey: pick(1, String(repeating: "s", count: 40)),
                sessionToken: pick(2, "FwoGZXIvYXdzEXAMPLE"))
        case .azureServicePrincipal?:
            guard slot < 3 else { return nil }
            return .azure(
                tenantID: pick(0, "72f988bf-86f1-41af-91ab-2d7cd011db47"),
                clientID: pick(1, "04b07795-8ddb-461a-bbee-02f9e1bf7b46"),
                clientSecret: pick(2, "secret~value"))
        case .googleServiceAccount?:
            let keys = ["client_email", "private_key", "private_key_id", "token_uri", "type"]
            guard slot < keys.count else { return nil }
            var account: [String: JSONValue] = [
                "type": "service_account", "client_email": "a@b.iam.gserviceaccount.com", "private_key": .string(pem),
                "private_key_id": "abc", "token_uri": "https://oauth2.googleapis.com/token",
            ]
            if slot >= 0 { account[keys[slot]] = .string(value) }
            return .googleServiceAccount(account)
        }
    }

    @Test("hostile credentials and settings reach every verifier's builder and come back as an outcome")
    func builders() async throws {
        let client = ProviderClient.makeClient()
        // Every request is built in full and then stopped by the egress policy (loopback is refused), so nothing is
        // sent anywhere.
        let down = try FakeProviders.closedPortURL()
        let endpoints = ProviderEndpoints(
            overrides: Dictionary(uniqueKeysWithValues: IntegrationType.allCases.map { ($0, down) }))
        let context = ProviderClient(
            client: client, endpoints: endpoints, egress: EgressPolicy(allowPrivate: false), timeout: .seconds(2))
        let hostile = HostileValues.around("valid-value-0123", maximumPositions: 8).compactMap(\.string)
        var calls = 0
        for type in IntegrationType.allCases {
            for slot in 0..<5 {
                for value in hostile {
                    guard let credentials = Self.credentials(type, slot: slot, value) else { continue }
                    _ = await Verifiers.verifier(for: type)?.verify(credentials, config: [:], in: context)
                    calls += 1
                }
            }
        }
        // Hostile settings, including the region that used to stop the process. Without an endpoint override the
        // AWS builder must refuse the region before any request.
        let settings: [JSONValue] =
            HostileValues.around("us-east-1").compactMap { $0.string.map(JSONValue.string) }
            + [.number(1), .null, .bool(true), .array([]), .object([:])]
        let noOverrides = ProviderClient(
            client: client, endpoints: ProviderEndpoints(), egress: EgressPolicy(allowPrivate: false),
            timeout: .seconds(2))
        let aws = Credentials.aws(
            accessKeyID: "AKIAQWERTYUIOPASDFGH", secretAccessKey: String(repeating: "s", count: 40), sessionToken: nil)
        for setting in settings {
            let result = await Verifiers.verifier(for: .aws)?.verify(aws, config: ["region": setting], in: noOverrides)
            #expect(result?.outcome == .unexpectedResponse, "\(setting)")
            for (type, key) in [(IntegrationType.azure, "cloud"), (.openai, "organization"), (.googleCloud, "scopes")] {
                guard let credentials = Self.credentials(type, slot: -1, "") else { continue }
                _ = await Verifiers.verifier(for: type)?.verify(credentials, config: [key: setting], in: context)
                calls += 1
            }
        }
        #expect(calls > 500)
        try await client.shutdown()
    }
}
