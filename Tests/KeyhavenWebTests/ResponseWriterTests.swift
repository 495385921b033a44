import Foundation
import KeyhavenCore
import Testing

@testable import KeyhavenWeb

/// Response bodies written field by field must be byte for byte what their `JSONValue` writes.
@Suite("Direct response writers")
struct ResponseWriterTests {
    static let texts = [
        "key", "", "with \"quotes\" and \\ backslash", "line\nbreak\ttab\u{1}\u{1F}", "café", "日本語",
        "emoji 🔑👩‍💻",
        "a/b", "z", "Ωmega", String(repeating: "x", count: 100),
    ]

    static func integration(_ index: Int) -> Integration {
        let text = texts[index % texts.count]
        var configs: [[String: JSONValue]] = [
            [:], ["organization": "org-1"], ["region": "eu-west-1", "scopes": ["a", "b"]],
        ]
        configs.append([
            "é": .string(text), "Z": .number(1.5), "a": .bool(true), "n": .null, "nested": ["k": .number(-0.0)],
        ])
        var integration = Integration(
            id: UUID(), ownerID: UUID(), name: text,
            type: IntegrationType.allCases[index % IntegrationType.allCases.count],
            status: [.verifying, .connected, .error, .disabled][index % 4], enabled: index % 3 != 0,
            config: configs[index % configs.count], credentialHint: index % 2 == 0 ? nil : "sk-…\(text.prefix(4))",
            credentialVersion: index, errorMessage: index % 5 == 0 ? text : nil,
            lastVerifiedAt: index % 2 == 0 ? Date(timeIntervalSince1970: Double(index) * 1234.5678) : nil,
            lastUsedAt: index % 3 == 0 ? Date() : nil, createdAt: Date(timeIntervalSince1970: 1_700_000_000.123),
            updatedAt: Date())
        integration.rotation =
            index % 2 == 0 ? .off : RotationPolicy(mode: .remind, everyDays: index + 1, graceHours: 24)
        integration.credentialsChangedAt = Date(timeIntervalSinceNow: -Double(index) * 86400)
        return integration
    }

    @Test("an integration and a page of them are written as their JSON values write them")
    func integrations() {
        let integrations = (0..<200).map(Self.integration)
        for integration in integrations {
            var bytes: [UInt8] = []
            IntegrationResponse(integration: integration).write(to: &bytes)
            #expect(bytes == Array(IntegrationResponse(integration: integration).json.jsonText.utf8))
        }
        for (page, cursor) in [(Array(integrations.prefix(50)), "c" as String?), ([], nil), (Array(integrations), nil)]
        {
            let list = IntegrationListResponse(integrations: page, nextCursor: cursor)
            var bytes: [UInt8] = []
            list.write(to: &bytes)
            #expect(bytes == Array(list.json.jsonText.utf8))
        }
    }
}
