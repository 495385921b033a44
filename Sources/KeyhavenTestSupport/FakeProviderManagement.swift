import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import JWTKit
import KeyhavenCore
import NIOCore
import _CryptoExtras

/// An access key the IAM fake keeps.
/// A fake's answer that ends a request early.
struct FakeRefusal: Error {
    let response: Response
}

struct FakeAWSKey: Sendable {
    var user: String
    var secret: String
    var active: Bool
    var created: Int
    var createdAt = Date(timeIntervalSince1970: 1_600_000_000)
}

/// The providers' management APIs that rotation uses, kept for real: AWS IAM (SigV4-checked, at most two keys per
/// user), Google IAM service-account keys and Microsoft Graph application passwords (each checking the bearer
/// token the fake token endpoint issued). What they create is accepted by the verification fakes afterwards, and
/// what they delete is refused.
extension FakeProviders {
    /// The IAM user's access keys: id and whether it is active.
    public func awsKeys(user: String = "keyhaven") -> [(id: String, active: Bool)] {
        state.awsKeys.withLock { keys in
            keys.filter { $0.value.user == user }.sorted { $0.value.created < $1.value.created }.map {
                ($0.key, $0.value.active)
            }
        }
    }

    /// The service account's key ids that still exist.
    public var googleKeyIDs: [String] { state.googleKeys.withLock { $0 } }

    /// The Azure application's password key ids.
    public var azureSecretKeyIDs: [String] { state.azureSecrets.withLock { $0.keys.sorted() } }

    /// While on, credentials made through the management APIs are refused by the verification endpoints (a new
    /// credential that does not work).
    public func refuseRotatedCredentials(_ refuse: Bool) { state.refuseRotated.withLock { $0 = refuse } }

    /// While on, Microsoft Graph refuses to remove the application's passwords (403), as for a principal that lost
    /// the permission.
    public func refuseAzureRemovals(_ refuse: Bool) { state.refuseRemovals.withLock { $0 = refuse } }

    /// Runs `action` inside Microsoft Graph's next `addPassword`s, before the secret is made (nil: no more).
    public func whileAddingAzurePassword(_ action: (@Sendable () async -> Void)?) {
        state.whileAddingPassword.withLock { $0 = action }
    }

    /// The management endpoints, for `ProviderEndpoints.services`.
    public var managementURLs: (awsIAM: URL, googleIAM: URL, azureGraph: URL) {
        let root = baseURL.absoluteString
        return (
            URL(string: "\(root)/aws-iam")!, URL(string: "\(root)/google-iam")!, URL(string: "\(root)/azure-graph")!
        )
    }

    static func addManagementRoutes(_ router: Router<BasicRequestContext>, keys: JWTKeyCollection, state: FakeState) {
        let fail = state.fail
        router.post("/aws-iam") { request, _ -> Response in
            guard let body = try? await request.body.collect(upTo: 1 << 16) else { return fail("iam: body") }
            let caller: FakeAWSKey
            switch verifySigV4(request, body: body, service: "iam", state: state, fail: fail) {
            case .failure(let refusal): return refusal.response
            case .success(let key): caller = key
            }
            var fields: [String: String] = [:]
            for pair in String(buffer: body).split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? "" }
                if parts.count == 2 { fields[parts[0]] = parts[1] }
            }
            guard fields["Version"] == "2010-05-08", let action = fields["Action"] else {
                return fail("iam: form \(fields.keys.sorted())")
            }
            // A user manages only their own keys here, as a key without IAM permissions over others would.
            guard let user = fields["UserName"], user == caller.user else {
                return fail("iam: user \(fields["UserName"] ?? "none")")
            }
            switch action {
            case "CreateAccessKey":
                let count = state.awsKeys.withLock { $0.values.filter { $0.user == user }.count }
                guard count < 2 else {
                    return xml(
                        .conflict,
                        "<ErrorResponse><Error><Type>Sender</Type><Code>LimitExceeded</Code><Message>Cannot "
                            + "exceed quota for AccessKeysPerUser: 2</Message></Error></ErrorResponse>"
                    )
                }
                let serial = state.next()
                let id = "AKIAFAKEROTATED" + String(format: "%05d", serial)
                let secret = "fakeRotatedSecret" + String(repeating: String(serial % 10), count: 23)
                state.awsKeys.withLock {
                    $0[id] = FakeAWSKey(user: user, secret: secret, active: true, created: serial, createdAt: Date())
                }
                return xml(
                    .ok,
                    """
                    <CreateAccessKeyResponse><CreateAccessKeyResult><AccessKey><UserName>\(user)</UserName>\
                    <AccessKeyId>\(id)</AccessKeyId><Status>Active</Status><SecretAccessKey>\(secret)</SecretAccessKey>\
                    </AccessKey></CreateAccessKeyResult></CreateAccessKeyResponse>
                    """)
            case "ListAccessKeys":
                let members = state.awsKeys.withLock { keys in
                    keys.filter { $0.value.user == user }.map { id, key in
                        "<member><UserName>\(user)</UserName><AccessKeyId>\(id)</AccessKeyId>"
                            + "<Status>\(key.active ? "Active" : "Inactive")</Status>"
                            + "<CreateDate>\(key.createdAt.formatted(Date.ISO8601FormatStyle()))</CreateDate></member>"
                    }.joined()
                }
                return xml(
                    .ok,
                    "<ListAccessKeysResponse><ListAccessKeysResult><AccessKeyMetadata>\(members)"
                        + "</AccessKeyMetadata></ListAccessKeysResult></ListAccessKeysResponse>"
                )
            case "UpdateAccessKey", "DeleteAccessKey":
                guard let id = fields["AccessKeyId"], state.awsKeys.withLock({ $0[id]?.user == user }) else {
                    return xml(
                        .notFound,
                        "<ErrorResponse><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>The "
                            + "Access Key with id \(fields["AccessKeyId"] ?? "") cannot be "
                            + "found.</Message></Error></ErrorResponse>"
                    )
                }
                if action == "DeleteAccessKey" {
                    state.awsKeys.withLock { _ = $0.removeValue(forKey: id) }
                } else {
                    guard let status = fields["Status"], ["Active", "Inactive"].contains(status) else {
                        return fail("iam: status")
                    }
                    state.awsKeys.withLock { $0[id]?.active = status == "Active" }
                }
                return xml(
                    .ok,
                    "<\(action)Response><ResponseMetadata><RequestId>fake"
                        + "</RequestId></ResponseMetadata></\(action)Response>"
                )
            default:
                return fail("iam: action \(action)")
            }
        }

        let accountEmail = "vault@fake-project.iam.gserviceaccount.com"
        @Sendable func googleCaller(_ request: Request, email: String?) -> Bool {
            guard email == accountEmail, let header = request.headers[.authorization], header.hasPrefix("Bearer ")
            else { return false }
            guard let issued = state.issuedTokens.withLock({ $0[String(header.dropFirst(7))] }),
                issued.hasPrefix("google:")
            else { return false }
            // A token made with a key deleted since is refused, like a revoked credential.
            return !state.deletedGoogleKeys.withLock { $0.contains(String(issued.dropFirst(7))) }
        }
        router.post("/google-iam/v1/projects/-/serviceAccounts/:email/keys") { request, context -> Response in
            guard googleCaller(request, email: context.parameters.get("email")) else {
                return json(
                    .unauthorized,
                    [
                        "error": [
                            "code": 401, "message": "Request had invalid authentication credentials.",
                            "status": "UNAUTHENTICATED",
                        ]
                    ])
            }
            let body = try await request.body.collect(upTo: 1 << 16)
            let fields = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] ?? [:]
            guard fields["privateKeyType"] as? String == "TYPE_GOOGLE_CREDENTIALS_FILE" else {
                return fail("google-iam: body")
            }
            let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
            let keyID = "fake-rotated-\(state.next())"
            await keys.add(
                rsa: try Insecure.RSA.PublicKey(pem: key.publicKey.pemRepresentation), digestAlgorithm: .sha256,
                kid: JWKIdentifier(string: keyID))
            state.googleKeys.withLock { $0.append(keyID) }
            state.googleKeyTimes.withLock { $0[keyID] = Date() }
            let account: [String: String] = [
                "type": "service_account", "project_id": "fake-project", "private_key_id": keyID,
                "private_key": key.pemRepresentation, "client_email": accountEmail, "client_id": "1234567890",
                "token_uri": "https://oauth2.googleapis.com/token",
            ]
            let file = try JSONSerialization.data(withJSONObject: account, options: [.sortedKeys])
            return json(
                .ok,
                [
                    "name": "projects/fake-project/serviceAccounts/\(accountEmail)/keys/\(keyID)",
                    "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE", "privateKeyData": file.base64EncodedString(),
                    "keyAlgorithm": "KEY_ALG_RSA_2048",
                ])
        }
        router.get("/google-iam/v1/projects/-/serviceAccounts/:email/keys") { request, context -> Response in
            guard googleCaller(request, email: context.parameters.get("email")) else {
                return json(
                    .unauthorized,
                    [
                        "error": [
                            "code": 401, "message": "Request had invalid authentication credentials.",
                            "status": "UNAUTHENTICATED",
                        ]
                    ])
            }
            guard request.uri.queryParameters["keyTypes"] == "USER_MANAGED" else {
                return fail("google-iam: list without keyTypes")
            }
            let keys = state.googleKeys.withLock { $0 }.map { id in
                let valid = state.googleKeyTimes.withLock { $0[id] } ?? Date(timeIntervalSince1970: 1_600_000_000)
                return [
                    "name": "projects/fake-project/serviceAccounts/\(accountEmail)/keys/\(id)",
                    "validAfterTime": valid.formatted(Date.ISO8601FormatStyle()), "keyType": "USER_MANAGED",
                ]
            }
            return json(.ok, ["keys": keys])
        }
        router.delete("/google-iam/v1/projects/-/serviceAccounts/:email/keys/:key") { request, context -> Response in
            guard googleCaller(request, email: context.parameters.get("email")) else {
                return json(
                    .unauthorized,
                    [
                        "error": [
                            "code": 401, "message": "Request had invalid authentication credentials.",
                            "status": "UNAUTHENTICATED",
                        ]
                    ])
            }
            let keyID = context.parameters.get("key") ?? ""
            let existed = state.googleKeys.withLock { keys in
                guard let index = keys.firstIndex(of: keyID) else { return false }
                keys.remove(at: index)
                return true
            }
            guard existed else {
                return json(
                    .notFound, ["error": ["code": 404, "message": "Key \(keyID) not found.", "status": "NOT_FOUND"]])
            }
            state.deletedGoogleKeys.withLock { _ = $0.insert(keyID) }
            return json(.ok, [:])
        }

        @Sendable func graphCaller(_ request: Request, application: String?) -> Bool {
            guard application?.removingPercentEncoding == "applications(appId='\(azureClient)')",
                let header = request.headers[.authorization],
                header.hasPrefix("Bearer ")
            else { return false }
            return state.issuedTokens.withLock { $0[String(header.dropFirst(7))] } == "graph:\(azureClient)"
        }
        @Sendable func graphRefusal() -> Response {
            json(
                .unauthorized,
                ["error": ["code": "InvalidAuthenticationToken", "message": "Access token validation failure."]])
        }
        router.get("/azure-graph/v1.0/:application") { request, context -> Response in
            guard graphCaller(request, application: context.parameters.get("application")) else {
                return graphRefusal()
            }
            guard request.uri.queryParameters["$select"] == "passwordCredentials" else { return fail("graph: select") }
            let names = state.azureNames.withLock { $0 }
            let credentials = state.azureSecrets.withLock { secrets in
                secrets.map {
                    ["keyId": $0.key, "hint": String($0.value.prefix(3)), "displayName": names[$0.key] ?? "secret"]
                }
            }
            return json(.ok, ["passwordCredentials": credentials])
        }
        router.post("/azure-graph/v1.0/:application/addPassword") { request, context -> Response in
            guard graphCaller(request, application: context.parameters.get("application")) else {
                return graphRefusal()
            }
            let body = try await request.body.collect(upTo: 1 << 16)
            let fields = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] ?? [:]
            guard let password = fields["passwordCredential"] as? [String: Any] else {
                return fail("graph: addPassword body")
            }
            if let action = state.whileAddingPassword.withLock({ $0 }) { await action() }
            let serial = state.next()
            let keyID = String(format: "bbbbbbbb-0000-0000-0000-%012d", serial)
            let secret = "rot~\(serial)~" + String(repeating: "x", count: 30)
            state.azureSecrets.withLock { $0[keyID] = secret }
            state.azureNames.withLock { $0[keyID] = password["displayName"] as? String ?? "" }
            return json(.ok, ["keyId": keyID, "secretText": secret, "hint": String(secret.prefix(3))])
        }
        router.post("/azure-graph/v1.0/:application/removePassword") { request, context -> Response in
            guard graphCaller(request, application: context.parameters.get("application")) else {
                return graphRefusal()
            }
            let body = try await request.body.collect(upTo: 1 << 16)
            let fields = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] ?? [:]
            guard let keyID = fields["keyId"] as? String else { return fail("graph: removePassword body") }
            if state.refuseRemovals.withLock({ $0 }) {
                return json(
                    .forbidden,
                    [
                        "error": [
                            "code": "Authorization_RequestDenied",
                            "message": "Insufficient privileges to complete the operation.",
                        ]
                    ])
            }
            let removed = state.azureSecrets.withLock { $0.removeValue(forKey: keyID) != nil }
            guard removed else {
                return json(
                    .notFound,
                    ["error": ["code": "Request_ResourceNotFound", "message": "No password with that key id."]])
            }
            return Response(status: .noContent)
        }
    }
}
