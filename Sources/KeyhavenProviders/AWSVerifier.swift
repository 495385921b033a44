import Foundation
import KeyhavenCore

/// AWS: STS GetCallerIdentity, signed with Signature Version 4; the account and ARN are kept.
struct AWSVerifier: Verifier {
    func verify(_ credentials: Credentials, config: [String: JSONValue], in context: ProviderClient) async
        -> VerificationResult
    {
        guard case .aws(let accessKeyID, let secret, let sessionToken) = credentials else {
            return VerificationResult(outcome: .invalidCredentials)
        }
        let region: String
        switch config["region"] {
        case nil: region = "us-east-1"
        case .string(let text)? where CredentialValidator.isAWSRegion(text): region = text
        default: return ProviderClient.Refused.unbuildable(.invalidRegion).result
        }
        let regional =
            config["region"] == nil
            ? ProviderEndpoints.defaultURL(.aws) : URL(string: "https://sts.\(region).amazonaws.com")
        guard let url = context.endpoints.override(.aws) ?? regional, url.host != nil else {
            return ProviderClient.Refused.unbuildable(.noRegionalEndpoint).result
        }
        let signer = SigV4Signer(
            credentials: .init(accessKeyID: accessKeyID, secretAccessKey: secret, sessionToken: sessionToken),
            region: region, service: "sts")
        switch await Self.post("Action=GetCallerIdentity&Version=2011-06-15", to: url, signer: signer, in: context) {
        case .failure(let refused):
            return refused.result
        case .success(let reply):
            let xml = String(decoding: reply.body, as: UTF8.self)
            if reply.status == 200 {
                guard let account = Self.element("Account", in: xml), let arn = Self.element("Arn", in: xml) else {
                    return VerificationResult(outcome: .unexpectedResponse, detail: .callerIdentityMissing)
                }
                return VerificationResult(
                    outcome: .connected, details: ["account_id": .string(account), "arn": .string(arn)])
            }
            let code = Self.element("Code", in: xml)
            let outcome: VerificationOutcome =
                switch code {
                case "InvalidClientTokenId", "SignatureDoesNotMatch", "IncompleteSignature", "InvalidAccessKeyId":
                    .invalidCredentials
                case "ExpiredToken", "RequestExpired", "TokenRefreshRequired": .expired
                case "AccessDenied", "AccessDeniedException", "UnauthorizedOperation": .insufficientPermissions
                case "Throttling", "ThrottlingException", "RequestLimitExceeded": .rateLimited
                default: commonOutcome(status: reply.status)
                }
            let message = Self.element("Message", in: xml)
            let said = VerificationDetail.provider(code: code, message: message)
            return VerificationResult(outcome: outcome, detail: said.text.isEmpty ? nil : said)
        }
    }

    /// POSTs a form to an AWS query API (STS, IAM), signed with Signature Version 4.
    static func post(
        _ form: String, to url: URL, signer: SigV4Signer, in context: ProviderClient
    ) async -> Result<ProviderClient.Reply, ProviderClient.Refused> {
        guard let hostName = url.host else { return .failure(.unbuildable(.endpointWithoutHost)) }
        let target = url.path.isEmpty ? "/" : url.path
        let requestURL = url.path.isEmpty ? url.appendingPathComponent("") : url
        let body = Data(form.utf8)
        let host = url.port.map { "\(hostName):\($0)" } ?? hostName
        let headers: [(name: String, value: String)] = [
            ("Host", host), ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
        ]
        let signed = signer.sign(.init(method: "POST", target: target, headers: headers, body: body), date: Date())
        let sent = headers.filter { $0.name != "Host" } + signed.headersToAdd
        return await context.send(.POST, requestURL, headers: sent.map { ($0.name, $0.value) }, body: body)
    }

    /// The text of the first `<name>…</name>` (STS answers in XML).
    static func element(_ name: String, in xml: String) -> String? {
        guard let start = xml.range(of: "<\(name)>"),
            let end = xml.range(of: "</\(name)>", range: start.upperBound..<xml.endIndex)
        else { return nil }
        return String(xml[start.upperBound..<end.lowerBound]).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
