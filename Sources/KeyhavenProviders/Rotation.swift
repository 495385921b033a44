import Foundation
import KeyhavenCore
import NIOHTTP1

/// A credential a rotation created at the provider.
public struct CreatedCredential: Sendable {
    /// The new credentials, whole (to be sealed before anything else is done with them).
    public var credentials: Credentials
    /// The provider's id for it: the AWS access key id, the Google key id, the Azure password's key id.
    public var keyID: String
}

/// Why a provider's management API did not do what was asked; the message never holds a secret.
public struct RotationFailure: Error, Sendable, Equatable {
    public var outcome: VerificationOutcome
    public var message: String

    public init(outcome: VerificationOutcome, message: String) {
        self.outcome = outcome
        self.message = message
    }

    init(_ refused: ProviderClient.Refused, _ what: String) {
        self.init(outcome: refused.outcome, message: "\(what): \(refused.message ?? refused.outcome.message())")
    }
}

/// Replaces a provider credential with a new one through the provider's own API (SPEC §15): AWS IAM access keys,
/// Google service-account keys, Azure application passwords. The caller stores the new credential, verifies it
/// and makes it current; only then, after the grace periods, does it retire the old one with the new one.
public protocol Rotator: Sendable {
    /// The provider's id of `credentials` (to retire them later).
    func keyID(of credentials: Credentials, in context: ProviderClient) async -> Result<String, RotationFailure>

    /// Creates a new credential with the current one; `tag` names it where the provider keeps a name (Azure).
    func create(using current: Credentials, tag: String, in context: ProviderClient) async -> Result<
        CreatedCredential, RotationFailure
    >

    /// Credentials made at the provider since `since` (or carrying `tag`), other than `keep`: what an interrupted
    /// `create` may have left behind.
    func strays(
        since: Date, tag: String, keep: String, using current: Credentials, in context: ProviderClient
    ) async -> Result<[String], RotationFailure>

    /// Stops the old credential from working without deleting it (AWS: `Inactive`); others have no such state and
    /// do nothing. `current` is the new credential, which does the asking.
    func deactivate(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    >

    /// Deletes the old credential at the provider, asking with `current`.
    func delete(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    >
}

extension Rotator {
    /// Creates a new credential without a tag.
    public func create(using current: Credentials, in context: ProviderClient) async -> Result<
        CreatedCredential, RotationFailure
    > {
        await create(using: current, tag: "", in: context)
    }
}

/// A provider's timestamp (ISO 8601, with or without fractional seconds).
func providerDate(_ text: String) -> Date? {
    (try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        ?? (try? Date(text, strategy: .iso8601))
}

/// The rotator of each provider that lets a credential replace itself.
public enum Rotators {
    /// The rotator for `type`, or nil where only reminders are possible (OpenAI, Anthropic, Gemini).
    public static func rotator(for type: IntegrationType) -> (any Rotator)? {
        switch type {
        case .aws: Sanitized(base: AWSRotator())
        case .googleCloud: Sanitized(base: GoogleCloudRotator())
        case .azure: Sanitized(base: AzureRotator())
        case .openai, .anthropic, .gemini: nil
        }
    }
}

/// Removes any echo of the credentials in use from what a provider said when it refused (Azure, for one, quotes a
/// wrong secret back).
struct Sanitized: Rotator {
    let base: any Rotator

    func keyID(of credentials: Credentials, in context: ProviderClient) async -> Result<String, RotationFailure> {
        clean(await base.keyID(of: credentials, in: context), credentials)
    }

    func create(using current: Credentials, tag: String, in context: ProviderClient) async -> Result<
        CreatedCredential, RotationFailure
    > {
        clean(await base.create(using: current, tag: tag, in: context), current)
    }

    func strays(
        since: Date, tag: String, keep: String, using current: Credentials, in context: ProviderClient
    ) async -> Result<[String], RotationFailure> {
        clean(await base.strays(since: since, tag: tag, keep: keep, using: current, in: context), current)
    }

    func deactivate(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        clean(await base.deactivate(keyID, using: current, in: context), current)
    }

    func delete(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        clean(await base.delete(keyID, using: current, in: context), current)
    }

    private func clean<T>(_ result: Result<T, RotationFailure>, _ credentials: Credentials) -> Result<
        T, RotationFailure
    > {
        result.mapError {
            RotationFailure(
                outcome: $0.outcome, message: Sanitizer.clean($0.message, secrets: credentials.secretValues))
        }
    }
}

/// AWS: the key's own IAM user (from `GetCallerIdentity`) gets a second access key with `CreateAccessKey`; the old
/// one is set `Inactive`, then deleted. IAM is global: signed for `us-east-1`, service `iam`.
struct AWSRotator: Rotator {
    func keyID(of credentials: Credentials, in context: ProviderClient) async -> Result<String, RotationFailure> {
        guard case .aws(let accessKeyID, _, _) = credentials else { return .failure(Self.notAWS) }
        return .success(accessKeyID)
    }

    func strays(
        since: Date, tag: String, keep: String, using current: Credentials, in context: ProviderClient
    ) async -> Result<[String], RotationFailure> {
        switch await userName(current, in: context) {
        case .failure(let failure):
            return .failure(failure)
        case .success(let user):
            return await call("ListAccessKeys", ["UserName": user], with: current, in: context).map { xml in
                xml.components(separatedBy: "<member>").dropFirst().compactMap { member in
                    guard let id = AWSVerifier.element("AccessKeyId", in: member), id != keep,
                        let created = AWSVerifier.element("CreateDate", in: member).flatMap(providerDate),
                        created >= since
                    else { return nil }
                    return id
                }
            }
        }
    }

    func create(using current: Credentials, tag: String, in context: ProviderClient) async -> Result<
        CreatedCredential, RotationFailure
    > {
        guard case .aws(_, _, let sessionToken) = current else { return .failure(Self.notAWS) }
        guard sessionToken == nil else {
            return .failure(
                RotationFailure(
                    outcome: .insufficientPermissions,
                    message: "Temporary (session) credentials cannot be rotated; store an IAM user's key."))
        }
        let user: String
        switch await userName(current, in: context) {
        case .success(let name): user = name
        case .failure(let failure): return .failure(failure)
        }
        switch await call("CreateAccessKey", ["UserName": user], with: current, in: context) {
        case .failure(let failure):
            if failure.message.hasPrefix("LimitExceeded") {
                return .failure(
                    RotationFailure(
                        outcome: .insufficientPermissions,
                        message:
                            "The IAM user \(user) already has two access keys; "
                            + "delete the one not in use, then rotate again."
                    ))
            }
            return .failure(failure)
        case .success(let xml):
            guard let id = AWSVerifier.element("AccessKeyId", in: xml),
                let secret = AWSVerifier.element("SecretAccessKey", in: xml),
                case .success(let credentials) = CredentialValidator.validate(
                    type: .aws, .object(["access_key_id": .string(id), "secret_access_key": .string(secret)]))
            else {
                return .failure(
                    RotationFailure(outcome: .unexpectedResponse, message: "IAM did not return a usable access key."))
            }
            return .success(CreatedCredential(credentials: credentials, keyID: id))
        }
    }

    func deactivate(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        await change("UpdateAccessKey", keyID, extra: ["Status": "Inactive"], using: current, in: context)
    }

    func delete(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        await change("DeleteAccessKey", keyID, extra: [:], using: current, in: context)
    }

    private func change(
        _ action: String, _ keyID: String, extra: [String: String], using current: Credentials,
        in context: ProviderClient
    ) async -> Result<Void, RotationFailure> {
        guard keyID.utf8.count == 20, keyID.utf8.allSatisfy(ASCII.isUpperAlphanumeric) else {
            return .failure(
                RotationFailure(outcome: .unexpectedResponse, message: "The old access key id is not valid."))
        }
        switch await userName(current, in: context) {
        case .failure(let failure): return .failure(failure)
        case .success(let user):
            var fields = extra
            fields["UserName"] = user
            fields["AccessKeyId"] = keyID
            return await call(action, fields, with: current, in: context).map { _ in () }
        }
    }

    /// The IAM user the key belongs to, from the ARN `GetCallerIdentity` returns (`…:user/path/NAME`).
    private func userName(_ credentials: Credentials, in context: ProviderClient) async -> Result<
        String, RotationFailure
    > {
        guard case .aws(let id, let secret, let token) = credentials else { return .failure(Self.notAWS) }
        let signer = SigV4Signer(
            credentials: .init(accessKeyID: id, secretAccessKey: secret, sessionToken: token), region: "us-east-1",
            service: "sts")
        let url = context.endpoints.base(.aws)
        switch await AWSVerifier.post(
            "Action=GetCallerIdentity&Version=2011-06-15", to: url, signer: signer, in: context)
        {
        case .failure(let refused):
            return .failure(RotationFailure(refused, "GetCallerIdentity"))
        case .success(let reply):
            let xml = String(decoding: reply.body, as: UTF8.self)
            guard reply.status == 200, let arn = AWSVerifier.element("Arn", in: xml) else {
                return .failure(Self.failure(reply, "GetCallerIdentity"))
            }
            let resource = arn.split(separator: ":", maxSplits: 5).last.map(String.init) ?? ""
            guard resource.hasPrefix("user/"), let name = resource.split(separator: "/").last, name.utf8.count <= 64,
                name.utf8.allSatisfy({ ASCII.isKeyCharacter($0) || "+=,.@".utf8.contains($0) })
            else {
                return .failure(
                    RotationFailure(
                        outcome: .insufficientPermissions,
                        message: "Only an IAM user's access key can rotate itself (this key is \(resource.prefix(40)))."
                    ))
            }
            return .success(String(name))
        }
    }

    /// One IAM query-API call, signed with `credentials`; the XML answer, or the error code and message.
    private func call(
        _ action: String, _ fields: [String: String], with credentials: Credentials, in context: ProviderClient
    ) async -> Result<String, RotationFailure> {
        guard case .aws(let id, let secret, let token) = credentials else { return .failure(Self.notAWS) }
        let signer = SigV4Signer(
            credentials: .init(accessKeyID: id, secretAccessKey: secret, sessionToken: token), region: "us-east-1",
            service: "iam")
        var all = fields
        all["Action"] = action
        all["Version"] = "2010-05-08"
        let form = all.sorted { $0.key < $1.key }.map { "\($0.key)=\(formEncode($0.value))" }.joined(separator: "&")
        switch await AWSVerifier.post(form, to: context.endpoints.base(.awsIAM), signer: signer, in: context) {
        case .failure(let refused):
            return .failure(RotationFailure(refused, action))
        case .success(let reply) where reply.status == 200:
            return .success(String(decoding: reply.body, as: UTF8.self))
        case .success(let reply):
            return .failure(Self.failure(reply, action))
        }
    }

    static func failure(_ reply: ProviderClient.Reply, _ action: String) -> RotationFailure {
        let xml = String(decoding: reply.body, as: UTF8.self)
        let code = AWSVerifier.element("Code", in: xml)
        let outcome: VerificationOutcome =
            switch code {
            case "InvalidClientTokenId", "SignatureDoesNotMatch", "InvalidAccessKeyId": .invalidCredentials
            case "ExpiredToken": .expired
            case "AccessDenied", "AccessDeniedException": .insufficientPermissions
            case "Throttling": .rateLimited
            default: commonOutcome(status: reply.status)
            }
        let text = [code, AWSVerifier.element("Message", in: xml)].compactMap { $0 }.joined(separator: ": ")
        // The code leads, so a caller can tell LimitExceeded apart.
        return RotationFailure(
            outcome: outcome, message: text.isEmpty ? "\(action) failed (\(reply.status))" : String(text.prefix(300)))
    }

    static let notAWS = RotationFailure(outcome: .unexpectedResponse, message: "These are not AWS credentials.")
}

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

    func deactivate(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        .success(())
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

    func deactivate(_ keyID: String, using current: Credentials, in context: ProviderClient) async -> Result<
        Void, RotationFailure
    > {
        .success(())
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
