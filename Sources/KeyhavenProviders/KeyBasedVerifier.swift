import Foundation
import KeyhavenCore

/// Every API-key provider, from its catalog entry (SPEC §16): GET the entry's check path with the key in the entry's
/// header (never in the URL) and its settings as their headers; a 2xx answer holding the entry's `found_at` is
/// connected, with the size of what it found (the models) as a detail.
struct KeyBasedVerifier: Verifier {
    let entry: ProviderEntry

    func verify(_ credentials: Credentials, config: [String: JSONValue], in context: ProviderClient) async
        -> VerificationResult
    {
        guard case .apiKey(let key) = credentials, let auth = entry.auth, let check = entry.verify else {
            return VerificationResult(outcome: .unexpectedResponse)
        }
        guard let base = context.endpoints.base(entry.type, config: config) else {
            return ProviderClient.Refused.unbuildable(.endpointWithoutHost).result
        }
        // The settings sent as query parameters (an Azure api-version), then the check's own, which win.
        var parameters = entry.queryParameters(config: config).filter { check.query[$0.0] == nil }
        parameters += check.query.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        guard let path = entry.path(check.path, config: config) else {
            return ProviderClient.Refused.unbuildable(.endpointWithoutHost).result
        }
        var components = URLComponents(
            url: base.appending(path: String(path.dropFirst())), resolvingAgainstBaseURL: false)
        components?.queryItems = parameters.isEmpty ? nil : parameters.map { URLQueryItem(name: $0.0, value: $0.1) }
        guard let url = components?.url else { return ProviderClient.Refused.unbuildable(.endpointWithoutHost).result }
        var headers = [(auth.header, auth.value(key))]
        for setting in entry.settings {
            if let header = setting.header, let value = config[setting.name]?.stringValue {
                headers.append((header, value))
            }
        }
        headers += check.headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        switch await context.send(.GET, url, headers: headers + [("Accept", "application/json")]) {
        case .failure(let refused):
            return refused.result
        case .success(let reply):
            let json = reply.json
            let message = providerMessage(json)
            var outcome = commonOutcome(status: reply.status)
            // Answers that mean more than their status: OpenAI's 401 for a restricted key lacking the models scope
            // (the key itself is valid), Gemini's 400 for a key it does not know.
            if let message = message?.lowercased(),
                let refusal = check.refusals.first(where: { refusal in
                    refusal.status == reply.status
                        && refusal.messageContains.contains { message.contains($0.lowercased()) }
                })
            {
                outcome = refusal.outcome == "invalid_credentials" ? .invalidCredentials : .insufficientPermissions
            }
            if outcome == .connected {
                guard let found = Self.value(at: check.foundAt, in: reply.body) else {
                    return VerificationResult(outcome: .unexpectedResponse, detail: .modelListMissing)
                }
                let count = (found as? [Any])?.count
                return VerificationResult(
                    outcome: .connected, details: count.map { ["model_count": .number(Double($0))] } ?? [:])
            }
            return VerificationResult(outcome: outcome, detail: message.map { .provider(code: nil, message: $0) })
        }
    }

    /// What the JSON pointer `pointer` (RFC 6901 without escapes: `""` for the whole answer) finds in `body`: an
    /// array or an object, or nil.
    static func value(at pointer: String, in body: Data) -> Any? {
        var current: Any? = try? JSONSerialization.jsonObject(with: body)
        for name in pointer.split(separator: "/") {
            current = (current as? [String: Any])?[String(name)]
        }
        return current is [Any] || current is [String: Any] ? current : nil
    }
}
