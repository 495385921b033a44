import Foundation
import KeyhavenCore

/// OpenAI, Anthropic and Gemini: list the models with the key in a header (never in the URL).
struct KeyBasedVerifier: Verifier {
    let type: IntegrationType
    let path: String
    let headers: @Sendable (String, [String: JSONValue]) -> [(String, String)]

    static let openai = KeyBasedVerifier(type: .openai, path: "/v1/models") { key, config in
        var headers = [("Authorization", "Bearer \(key)")]
        if let organization = config["organization"]?.stringValue {
            headers.append(("OpenAI-Organization", organization))
        }
        if let project = config["project"]?.stringValue { headers.append(("OpenAI-Project", project)) }
        return headers
    }

    static let anthropic = KeyBasedVerifier(type: .anthropic, path: "/v1/models") { key, _ in
        [("x-api-key", key), ("anthropic-version", "2023-06-01")]
    }

    static let gemini = KeyBasedVerifier(type: .gemini, path: "/v1beta/models") { key, _ in
        [("x-goog-api-key", key)]
    }

    func verify(_ credentials: Credentials, config: [String: JSONValue], in context: ProviderClient) async
        -> VerificationResult
    {
        guard case .apiKey(let key) = credentials else { return VerificationResult(outcome: .unexpectedResponse) }
        let url = context.endpoints.base(type).appendingPathComponent(String(path.dropFirst()))
        switch await context.send(.GET, url, headers: headers(key, config) + [("Accept", "application/json")]) {
        case .failure(let refused):
            return refused.result
        case .success(let reply):
            let json = reply.json
            let message = providerMessage(json)
            var outcome = commonOutcome(status: reply.status)
            if reply.status == 401, let message, Self.isRestrictedKey(message) {
                // OpenAI answers 401 for restricted keys that lack the models scope: the key itself is valid.
                outcome = .insufficientPermissions
            }
            if type == .gemini, reply.status == 400, message?.localizedCaseInsensitiveContains("api key") == true {
                outcome = .invalidCredentials
            }
            if outcome == .connected {
                guard let models = (json["data"] ?? json["models"]) as? [Any] else {
                    return VerificationResult(outcome: .unexpectedResponse, detail: .modelListMissing)
                }
                return VerificationResult(outcome: .connected, details: ["model_count": .number(Double(models.count))])
            }
            return VerificationResult(outcome: outcome, detail: message.map { .provider(code: nil, message: $0) })
        }
    }

    static func isRestrictedKey(_ message: String) -> Bool {
        let text = message.lowercased()
        return text.contains("insufficient permissions") || text.contains("missing scopes")
            || text.contains("missing scope")
    }
}
