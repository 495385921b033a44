import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import KeyhavenCore
import KeyhavenProviders
import NIOCore

/// How the fakes check what they receive: the AWS query API with its SigV4 signature, a JWT's key id.
extension FakeProviders {
    static func aws(_ request: Request, state: FakeState, fail: @Sendable (String) -> Response) async -> Response {
        guard let body = try? await request.body.collect(upTo: 1 << 16) else { return fail("aws: body") }
        guard String(buffer: body) == "Action=GetCallerIdentity&Version=2011-06-15" else {
            return fail("aws: body \(String(buffer: body))")
        }
        let key: FakeAWSKey
        switch verifySigV4(request, body: body, service: "sts", state: state, fail: fail) {
        case .failure(let refusal): return refusal.response
        case .success(let signer): key = signer
        }
        return xml(
            .ok,
            """
            <GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>\
            <Arn>arn:aws:iam::123456789012:user/\(key.user)</Arn><UserId>AIDAFAKE</UserId>\
            <Account>123456789012</Account>\
            </GetCallerIdentityResult></GetCallerIdentityResponse>
            """)
    }

    /// Checks a SigV4-signed request the way AWS does: the access key must exist and be active, and the signature
    /// recomputed with its secret over the signed headers must match.
    static func verifySigV4(
        _ request: Request, body: ByteBuffer, service: String, state: FakeState, fail: @Sendable (String) -> Response
    ) -> Result<FakeAWSKey, FakeRefusal> {
        guard let authorization = request.headers[.authorization], authorization.hasPrefix("AWS4-HMAC-SHA256 "),
            let amzDate = request.headers[HTTPField.Name("X-Amz-Date")!]
        else { return .failure(FakeRefusal(response: fail("\(service): not signed"))) }
        func part(_ name: String) -> String? {
            authorization.components(separatedBy: ", ").compactMap { item -> String? in
                let item = item.replacingOccurrences(of: "AWS4-HMAC-SHA256 ", with: "")
                return item.hasPrefix(name + "=") ? String(item.dropFirst(name.count + 1)) : nil
            }.first
        }
        guard let credential = part("Credential"), let signedHeaders = part("SignedHeaders"),
            let signature = part("Signature")
        else {
            return .failure(FakeRefusal(response: fail("\(service): authorization header")))
        }
        let scope = credential.split(separator: "/")
        guard scope.count == 5, scope[3] == service, scope[4] == "aws4_request" else {
            return .failure(FakeRefusal(response: fail("\(service): scope \(credential)")))
        }
        if service == "iam" && scope[2] != "us-east-1" {
            return .failure(FakeRefusal(response: fail("iam: region \(scope[2])")))
        }
        let accessKeyID = String(scope[0])
        if accessKeyID == awsExpiredAccessKeyID {
            return .failure(
                FakeRefusal(
                    response: xml(
                        .forbidden,
                        "<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code><Message>The "
                            + "security token included in the request is expired</Message></Error></ErrorResponse>"
                    )))
        }
        guard let key = state.awsKeys.withLock({ $0[accessKeyID] }), key.active,
            service != "sts" || key.created == 0 || !state.refuseRotated.withLock({ $0 })
        else {
            return .failure(
                FakeRefusal(
                    response: xml(
                        .forbidden,
                        "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The "
                            + "security token included in the request is invalid.</Message></Error></ErrorResponse>"
                    )))
        }
        // Recompute the signature from the secret this fake knows, over exactly the headers that were signed.
        var headers: [(name: String, value: String)] = []
        for name in signedHeaders.split(separator: ";") {
            let field = name == "host" ? request.head.authority : request.headers[HTTPField.Name(String(name))!]
            guard let value = field else {
                return .failure(FakeRefusal(response: fail("\(service): signed header \(name) missing")))
            }
            headers.append((String(name), value))
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        guard let date = formatter.date(from: amzDate), abs(date.timeIntervalSinceNow) < 300 else {
            return .failure(FakeRefusal(response: fail("\(service): date")))
        }
        var signer = SigV4Signer(
            credentials: .init(accessKeyID: accessKeyID, secretAccessKey: key.secret, sessionToken: nil),
            region: String(scope[2]), service: service)
        signer.signSessionToken = false
        let expected = signer.sign(
            .init(method: "POST", target: request.uri.path, headers: headers, body: Data(buffer: body)), date: date)
        guard expected.signature == signature else {
            return .failure(
                FakeRefusal(
                    response: xml(
                        .forbidden,
                        "<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>The "
                            + "request signature we calculated does not match the signature you "
                            + "provided.</Message></Error></ErrorResponse>"
                    )))
        }
        return .success(key)
    }

    /// The `kid` of a JWT's header, without checking anything.
    static func jwtKeyID(_ token: String) -> String? {
        guard var header = token.split(separator: ".").first.map(String.init) else { return nil }
        header = header.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while header.count % 4 != 0 { header += "=" }
        guard let data = Data(base64Encoded: header),
            let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        else { return nil }
        return object["kid"] as? String
    }
}
