import Foundation
import HTTPTypes
import KeyhavenApp
import KeyhavenCore
import KeyhavenTestSupport
import Testing

/// Every field of every integration type, fed generated hostile values through the HTTP API.
@Suite("Validation under hostile input")
struct FuzzTests {
    static let placeholder = "__KEYHAVEN_HOSTILE_VALUE__"

    /// One field to attack: where it sits in a valid body, and its valid value.
    struct Field: CustomStringConvertible {
        let type: String
        /// `name`, `credentials`, `credentials.<key>` or `config.<key>`.
        let path: String
        let valid: String
        /// Whether the service account is sent as JSON text rather than as an object.
        var serviceAccountAsText = false
        var description: String { "\(type) \(path)\(serviceAccountAsText ? " (as text)" : "")" }
    }

    static let pem: String = {
        let der = Data(
            [0x30, 0x82] + Array("keyhaven fuzz private key material".utf8) + Array(repeating: 0x41, count: 80))
        return "-----BEGIN PRIVATE KEY-----\n\(der.base64EncodedString())\n-----END PRIVATE KEY-----\n"
    }()

    nonisolated(unsafe) static let credentials: [String: Any] = [
        "openai": "sk-fuzz-valid-key-0000000000",
        "anthropic": "sk-ant-fuzz-valid-key-000000000",
        "gemini": "AIza" + String(repeating: "F", count: 35),
        "aws": [
            "access_key_id": "AKIAQWERTYUIOPASDFGH", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "session_token": "FwoGZXIvYXdzEXAMPLEtoken",
        ],
        "azure": [
            "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47", "client_id": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
            "client_secret": "fuzz~client.secret_0123",
        ],
        "google_cloud": [
            "type": "service_account", "client_email": "vault@fuzz-project.iam.gserviceaccount.com", "private_key": pem,
            "private_key_id": "abc123def456", "token_uri": "https://oauth2.googleapis.com/token",
            "project_id": "fuzz-project",
        ],
    ]

    static let configs: [String: [String: String]] = [
        "openai": ["organization": "org-fuzz123", "project": "proj_fuzz123"], "aws": ["region": "us-east-1"],
        "azure": ["cloud": "public"], "google_cloud": ["scopes": "https://www.googleapis.com/auth/cloud-platform"],
    ]

    static var fields: [Field] {
        var fields: [Field] = []
        for type in ["openai", "anthropic", "gemini", "aws", "azure", "google_cloud"] {
            fields.append(Field(type: type, path: "name", valid: "fuzz integration"))
            switch credentials[type] {
            case let key as String: fields.append(Field(type: type, path: "credentials", valid: key))
            case let object as [String: String]:
                for (key, value) in object.sorted(by: { $0.key < $1.key }) {
                    fields.append(Field(type: type, path: "credentials.\(key)", valid: value))
                    if type == "google_cloud" {
                        fields.append(
                            Field(type: type, path: "credentials.\(key)", valid: value, serviceAccountAsText: true))
                    }
                }
            default: break
            }
            for (key, value) in (configs[type] ?? [:]).sorted(by: { $0.key < $1.key }) {
                fields.append(Field(type: type, path: "config.\(key)", valid: value))
            }
        }
        return fields
    }

    /// A valid body for `field`'s type with the placeholder where the field goes, as JSON text with `value` in it.
    static func body(_ field: Field, name: String, value: HostileValue) throws -> Data {
        var credentials = Self.credentials[field.type] ?? ""
        var config: [String: Any] = (configs[field.type] ?? [:]).mapValues { $0 }
        if field.type == "google_cloud" { config["scopes"] = [configs["google_cloud"]?["scopes"] ?? ""] }
        var body: [String: Any] = ["type": field.type, "name": name]
        let parts = field.path.split(separator: ".", maxSplits: 1).map(String.init)
        switch (parts.first, parts.count) {
        case ("name", _): body["name"] = placeholder
        case ("credentials", 1): credentials = placeholder
        case ("credentials", _):
            var object = credentials as? [String: Any] ?? [:]
            object[parts[1]] = placeholder
            credentials = object
        default:
            config[parts[1]] = parts[1] == "scopes" ? [placeholder] : placeholder
        }
        let quoted = HostileValues.literal(placeholder)
        if field.serviceAccountAsText {
            let inner = String(decoding: try JSONSerialization.data(withJSONObject: credentials), as: UTF8.self)
            body["credentials"] = inner.replacingOccurrences(of: quoted, with: value.json)
        } else {
            body["credentials"] = credentials
        }
        body["config"] = config
        let text = String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)
        return Data(text.replacingOccurrences(of: quoted, with: value.json).utf8)
    }

    @Test(
        "hostile values in every field get a 422 naming the field, or are stored and checked; the server stays up",
        arguments: TestDatabase.all)
    func everyField(kind: TestDatabase) async throws {
        // Checks of stored values are refused by the egress policy (loopback), so each ends at once in a recorded
        // outcome without waiting on a connection.
        try await APIHarness.with(kind, configure: { $0.egressAllowPrivate = false }) { api in
            let worker = VerificationWorker(runner: api.runtime.verifier)
            var counter = 0
            var outcomes: [String: Int] = [:]
            for field in Self.fields {
                var user = try await api.user()
                for value in HostileValues.around(field.valid) {
                    // A name that is stored after trimming must not meet an earlier one: one user per attempt.
                    if field.path == "name" { user = try await api.user() }
                    counter += 1
                    let name = "fuzz-\(counter)"
                    let response = try await api.request(
                        .post, "/api/integrations", auth: user.session,
                        json: try Self.body(field, name: name, value: value))
                    switch response.status {
                    case .unprocessableContent:
                        let named =
                            response.fields.keys.contains(field.path)
                            || (field.serviceAccountAsText && response.fields.keys.contains("credentials"))
                        #expect(named, "\(field) ← \(value): \(response.fields)")
                        outcomes["422", default: 0] += 1
                    case .created:
                        let id = try #require(response.json["id"] as? String)
                        for _ in 0..<5 where try await worker.runOnce() > 0 {}
                        let stored = try await api.request(.get, "/api/integrations/\(id)", auth: user.session).json
                        #expect(
                            stored["status"] as? String != "verifying", "\(field) ← \(value): no recorded outcome")
                        outcomes["201", default: 0] += 1
                    case .badRequest where value.label == "invalid surrogate":
                        // Not JSON at all (a lone UTF-16 surrogate): refused before any field is looked at.
                        outcomes["400", default: 0] += 1
                    default:
                        Issue.record("\(field) ← \(value): \(response.status) \(response.text.prefix(200))")
                    }
                    #expect(try await api.request(.get, "/healthz").status == .ok)
                }
            }
            #expect(outcomes["422", default: 0] > outcomes["201", default: 0], "\(outcomes)")
            print("hostile requests by status: \(outcomes.sorted { $0.key < $1.key })")
        }
    }
}
