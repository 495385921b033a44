import Foundation
import KeyhavenCore

/// Google Cloud: a token from the current key creates a new key for the same service account
/// (`serviceAccounts.keys.create`); the old key is deleted with a token from the new one.
struct GoogleCloudRotator: Rotator {
    func keyID(of credentials: Credentials, in context: ProviderClient) async -> Result<String, RotationFailure> {
        guard case .googleServiceAccount(let account) = credentials, let id = account["private_key_id"]?.stringValue
        else {
            return .failure(Self.notGoogle)
        }
        return .success(id)
    }

    func strays(
        since: Date, tag: String, keep: String, using current: Credentials, in context: ProviderClient
    ) async -> Result<[String], RotationFailure> {
        switch await bearer(current, in: context) {
        case .failure(let failure):
            return .failure(failure)
        case .success(let (email, token)):
            guard let base = keysURL(email, in: context),
                let url = URL(string: base.absoluteString + "?keyTypes=USER_MANAGED")
            else {
                return .failure(Self.notGoogle)
            }
            switch await context.send(.GET, url, headers: [("Authorization", "Bearer \(token)")]) {
            case .failure(let refused):
                return .failure(RotationFailure(refused, "Listing the keys"))
            case .success(let reply) where reply.status == 200:
                let keys = reply.json["keys"] as? [[String: Any]] ?? []
                return .success(
                    keys.compactMap { key in
                        guard let id = (key["name"] as? String)?.split(separator: "/").last.map(String.init),
                            id != keep,
                            let valid = (key["validAfterTime"] as? String).flatMap(providerDate), valid >= since
                        else { return nil }
                        return id
                    })
            case .success(let reply):
                return .failure(Self.failure(reply, "Listing the keys"))
            }
        }
    }

    func create(using current: Credentials, tag: String, in context: ProviderClient) async -> Result<
        CreatedCredential, RotationFailure
    > {
        let (email, token): (String, String)
        switch await bearer(current, in: context) {
        case .failure(let failure): return .failure(failure)
        case .success(let pair): (email, token) = pair
        }
        guard let url = keysURL(email, in: context) else { return .failure(Self.notGoogle) }
        let body = Data(#"{"privateKeyType":"TYPE_GOOGLE_CREDENTIALS_FILE","keyAlgorithm":"KEY_ALG_RSA_2048"}"#.utf8)
        let headers = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
        switch await context.send(.POST, url, headers: headers, body: body) {
        case .failure(let refused):
            return .failure(RotationFailure(refused, "Creating a key"))
        case .success(let reply) where reply.status == 200:
            guard let data = (reply.json["privateKeyData"] as? String).flatMap({ Data(base64Encoded: $0) }),
                let file = try? JSONDecoder().decode(JSONValue.self, from: data),
                case .success(let credentials) = CredentialValidator.validate(type: .googleCloud, file),
                case .googleServiceAccount(let account) = credentials, account["client_email"]?.stringValue == email,
                let keyID = account["private_key_id"]?.stringValue
            else {
                return .failure(
                    RotationFailure(outcome: .unexpectedResponse, message: "Google did not return a usable key file."))
            }
            return .success(CreatedCredential(credentials: credentials, keyID: keyID))
        case .success(let reply):
            return .failure(Self.failure(reply, "Creating a key"))
        }
    }

    func delete(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        guard !keyID.isEmpty, keyID.utf8.allSatisfy(ASCII.isKeyCharacter) else {
            return .failure(RotationFailure(outcome: .unexpectedResponse, message: "The old key id is not valid."))
        }
        switch await bearer(current, in: context) {
        case .failure(let failure):
            return .failure(failure)
        case .success(let (email, token)):
            guard let url = keysURL(email, in: context)?.appendingPathComponent(keyID) else {
                return .failure(Self.notGoogle)
            }
            switch await context.send(.DELETE, url, headers: [("Authorization", "Bearer \(token)")]) {
            case .failure(let refused): return .failure(RotationFailure(refused, "Deleting the old key"))
            // A key that is already gone (a retried step) counts as deleted.
            case .success(let reply) where [200, 204, 404].contains(reply.status): return .success(())
            case .success(let reply): return .failure(Self.failure(reply, "Deleting the old key"))
            }
        }
    }

    private func keysURL(_ email: String, in context: ProviderClient) -> URL? {
        guard !email.isEmpty,
            email.utf8.allSatisfy({ ASCII.isKeyCharacter($0) || $0 == UInt8(ascii: "@") || $0 == UInt8(ascii: ".") })
        else {
            return nil
        }
        return context.endpoints.base(.googleIAM).appendingPathComponent("v1/projects/-/serviceAccounts")
            .appendingPathComponent(email)
            .appendingPathComponent("keys")
    }

    /// An access token for the Cloud Platform scope, from the service account's key.
    private func bearer(_ credentials: Credentials, in context: ProviderClient) async -> Result<
        (String, String), RotationFailure
    > {
        guard case .googleServiceAccount(let account) = credentials, let email = account["client_email"]?.stringValue,
            let pem = account["private_key"]?.stringValue, let keyID = account["private_key_id"]?.stringValue
        else { return .failure(Self.notGoogle) }
        guard case .success(let (url, origin)) = GoogleCloudVerifier.tokenURL(account, in: context) else {
            return .failure(
                RotationFailure(
                    outcome: .endpointNotAllowed, message: "The service account's token_uri is not a Google endpoint."))
        }
        guard
            let form = await GoogleCloudVerifier.assertionForm(
                email: email, pem: pem, keyID: keyID, scopes: [GoogleCloudVerifier.defaultScope], audience: url)
        else {
            return .failure(
                RotationFailure(outcome: .invalidCredentials, message: "The private key could not be read."))
        }
        switch await context.accessToken(url, origin: origin, form: form) {
        case .failure(let refused): return .failure(RotationFailure(refused, "Getting a token"))
        case .success(.failure(let reply)): return .failure(Self.failure(reply, "Getting a token"))
        case .success(.success(let token)): return .success((email, token))
        }
    }

    static func failure(_ reply: ProviderClient.Reply, _ what: String) -> RotationFailure {
        let outcome: VerificationOutcome =
            switch reply.status {
            case 400 where reply.json["error"] as? String == "invalid_grant", 401: .invalidCredentials
            case 403: .insufficientPermissions
            default: commonOutcome(status: reply.status)
            }
        return RotationFailure(
            outcome: outcome, message: "\(what): \(providerMessage(reply.json) ?? "status \(reply.status)")")
    }

    static let notGoogle = RotationFailure(
        outcome: .unexpectedResponse, message: "These are not service-account credentials.")
}
