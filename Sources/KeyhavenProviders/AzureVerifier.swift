import Foundation
import KeyhavenCore

/// Azure: the client-credentials grant for the service principal, with AADSTS error codes mapped.
struct AzureVerifier: Verifier {
    static let authorities = [
        "public": "https://login.microsoftonline.com", "usgovernment": "https://login.microsoftonline.us",
        "china": "https://login.chinacloudapi.cn",
    ]
    static let scopes = [
        "public": "https://management.azure.com/.default",
        "usgovernment": "https://management.usgovcloudapi.net/.default",
        "china": "https://management.chinacloudapi.cn/.default",
    ]

    func verify(_ credentials: Credentials, config: [String: JSONValue], in context: ProviderClient) async
        -> VerificationResult
    {
        guard case .azure(let tenant, let client, let secret) = credentials else {
            return VerificationResult(outcome: .invalidCredentials)
        }
        let cloud = config["cloud"]?.stringValue ?? "public"
        guard ASCII.isGUID(tenant), let scope = Self.scopes[cloud],
            let authority = context.endpoints.override(.azure) ?? Self.authorities[cloud].flatMap(URL.init(string:))
        else { return ProviderClient.Refused.unbuildable(.invalidTenantOrCloud).result }
        let url = authority.appendingPathComponent(tenant).appendingPathComponent("oauth2/v2.0/token")
        let form = [
            ("client_id", client), ("client_secret", secret), ("scope", scope), ("grant_type", "client_credentials"),
        ].map { "\($0.0)=\(formEncode($0.1))" }.joined(separator: "&")
        switch await context.requestToken(url, form: form, details: ["tenant_id": .string(tenant)]) {
        case .finished(let result):
            return result
        case .refused(let reply):
            let json = reply.json
            let description = json["error_description"] as? String ?? ""
            let code = description.range(of: #"AADSTS\d+"#, options: String.CompareOptions.regularExpression).map {
                String(description[$0])
            }
            let (outcome, meaning): (VerificationOutcome, VerificationDetail.AzureRefusal?) =
                switch code {
                case "AADSTS7000215": (.invalidCredentials, .invalidClientSecret)
                case "AADSTS7000222": (.expired, .expiredClientSecret)
                case "AADSTS700016": (.invalidCredentials, .unknownApplication)
                case "AADSTS90002", "AADSTS900023": (.invalidCredentials, .unknownTenant)
                case "AADSTS50034", "AADSTS7000112": (.invalidCredentials, nil)
                default:
                    (
                        reply.status == 400 || reply.status == 401
                            ? .invalidCredentials : commonOutcome(status: reply.status), nil
                    )
                }
            let first = description.split(separator: "\r\n").first.map(String.init) ?? description
            if let code, let meaning {
                return VerificationResult(outcome: outcome, detail: .azure(code: code, meaning))
            }
            return VerificationResult(outcome: outcome, detail: .provider(code: code, message: first))
        }
    }
}
