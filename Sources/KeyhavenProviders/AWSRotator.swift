import Foundation
import KeyhavenCore

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
