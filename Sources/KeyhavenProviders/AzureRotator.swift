import Foundation
import KeyhavenCore
import NIOHTTP1

/// Azure: a Microsoft Graph token from the current secret adds a password to the application (`addPassword`); the
/// old one is removed (`removePassword`) with a token from the new one. The old secret's key id is found by its
/// hint (its first three characters) among the application's passwords.
struct AzureRotator: Rotator {
    static let graphScope = "https://graph.microsoft.com/.default"

    func keyID(of credentials: Credentials, in context: ProviderClient) async -> Result<String, RotationFailure> {
        guard case .azure(_, let client, let secret) = credentials else { return .failure(Self.notAzure) }
        switch await graph(.GET, "", query: "?$select=passwordCredentials", body: nil, using: credentials, in: context)
        {
        case .failure(let failure):
            return .failure(failure)
        case .success(let reply):
            let passwords = reply.json["passwordCredentials"] as? [[String: Any]] ?? []
            let matches = passwords.filter { $0["hint"] as? String == String(secret.prefix(3)) }.compactMap {
                $0["keyId"] as? String
            }
            guard matches.count == 1, let keyID = matches.first else {
                return .failure(
                    RotationFailure(
                        outcome: .unexpectedResponse,
                        message:
                            "Cannot tell which of application \(client)'s secrets is "
                            + "the stored one; remove the old secret in Azure by hand."
                    ))
            }
            return .success(keyID)
        }
    }

    func strays(
        since: Date, tag: String, keep: String, using current: Credentials, in context: ProviderClient
    ) async -> Result<[String], RotationFailure> {
        // Graph keeps a name: only secrets named for this very rotation are its strays.
        guard !tag.isEmpty else { return .success([]) }
        return await graph(.GET, "", query: "?$select=passwordCredentials", body: nil, using: current, in: context).map
        { reply in
            (reply.json["passwordCredentials"] as? [[String: Any]] ?? []).compactMap { password in
                guard password["displayName"] as? String == Self.displayName(tag),
                    let id = password["keyId"] as? String, id != keep
                else { return nil }
                return id
            }
        }
    }

    static func displayName(_ tag: String) -> String { "keyhaven rotation \(tag)" }

    func create(using current: Credentials, tag: String, in context: ProviderClient) async -> Result<
        CreatedCredential, RotationFailure
    > {
        guard case .azure(let tenant, let client, _) = current else { return .failure(Self.notAzure) }
        let name = Self.displayName(
            tag.isEmpty ? Date().formatted(Date.ISO8601FormatStyle().year().month().day()) : tag)
        let body = try? JSONSerialization.data(withJSONObject: ["passwordCredential": ["displayName": name]])
        switch await graph(.POST, "/addPassword", body: body, using: current, in: context) {
        case .failure(let failure):
            return .failure(failure)
        case .success(let reply):
            guard let secret = reply.json["secretText"] as? String, let keyID = reply.json["keyId"] as? String,
                case .success(let credentials) = CredentialValidator.validate(
                    type: .azure,
                    .object([
                        "tenant_id": .string(tenant), "client_id": .string(client), "client_secret": .string(secret),
                    ]))
            else {
                return .failure(
                    RotationFailure(outcome: .unexpectedResponse, message: "Graph did not return a usable secret."))
            }
            return .success(CreatedCredential(credentials: credentials, keyID: keyID))
        }
    }

    func delete(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        guard ASCII.isGUID(keyID) else {
            return .failure(
                RotationFailure(outcome: .unexpectedResponse, message: "The old secret's key id is not valid."))
        }
        let body = try? JSONSerialization.data(withJSONObject: ["keyId": keyID])
        // Deleting a secret that is already gone (a retried step) succeeds.
        return await graph(.POST, "/removePassword", body: body, using: current, in: context, gone: 404).map { _ in () }
    }

    /// One Graph call on the application, with a token from `credentials`.
    private func graph(
        _ method: HTTPMethod, _ path: String, query: String = "", body: Data?, using credentials: Credentials,
        in context: ProviderClient, gone: Int? = nil
    ) async -> Result<ProviderClient.Reply, RotationFailure> {
        guard case .azure(let tenant, let client, let secret) = credentials, ASCII.isGUID(tenant), ASCII.isGUID(client),
            let authority = context.endpoints.override(.azure)
                ?? AzureVerifier.authorities["public"].flatMap(URL.init(string:))
        else { return .failure(Self.notAzure) }
        let tokenURL = authority.appendingPathComponent(tenant).appendingPathComponent("oauth2/v2.0/token")
        let form = [
            ("client_id", client), ("client_secret", secret), ("scope", Self.graphScope),
            ("grant_type", "client_credentials"),
        ]
        .map { "\($0.0)=\(formEncode($0.1))" }.joined(separator: "&")
        let token: String
        switch await context.accessToken(tokenURL, form: form) {
        case .failure(let refused): return .failure(RotationFailure(refused, "Getting a Graph token"))
        case .success(.failure(let reply)): return .failure(Self.failure(reply, "Getting a Graph token"))
        case .success(.success(let value)): token = value
        }
        let base = context.endpoints.base(.azureGraph).absoluteString
        guard let url = URL(string: "\(base)/v1.0/applications(appId='\(client)')\(path)\(query)") else {
            return .failure(Self.notAzure)
        }
        var headers = [("Authorization", "Bearer \(token)")]
        if body != nil { headers.append(("Content-Type", "application/json")) }
        switch await context.send(method, url, headers: headers, body: body) {
        case .failure(let refused): return .failure(RotationFailure(refused, "Microsoft Graph"))
        case .success(let reply) where (200..<300).contains(reply.status) || reply.status == gone:
            return .success(reply)
        case .success(let reply): return .failure(Self.failure(reply, "Microsoft Graph"))
        }
    }

    static func failure(_ reply: ProviderClient.Reply, _ what: String) -> RotationFailure {
        let outcome: VerificationOutcome =
            switch reply.status {
            case 400, 401: .invalidCredentials
            case 403: .insufficientPermissions
            default: commonOutcome(status: reply.status)
            }
        let error = reply.json["error"]
        let message = (error as? [String: Any])?["message"] as? String ?? reply.json["error_description"] as? String
        return RotationFailure(
            outcome: outcome, message: "\(what): \(message.map { String($0.prefix(300)) } ?? "status \(reply.status)")")
    }

    static let notAzure = RotationFailure(
        outcome: .unexpectedResponse, message: "These are not Azure service-principal credentials.")
}
