import Crypto
import Foundation
import KeyhavenCore

/// AWS Signature Version 4 for request headers, written from the specification and checked against the
/// official test suite (Tests/KeyhavenProvidersTests/Fixtures/aws-sigv4).
public struct SigV4Signer: Sendable {
    /// AWS credentials. The secret never leaves this type except as HMAC input.
    public struct Credentials: Sendable {
        public var accessKeyID: String
        public var secretAccessKey: String
        public var sessionToken: String?

        public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
            self.accessKeyID = accessKeyID
            self.secretAccessKey = secretAccessKey
            self.sessionToken = sessionToken
        }
    }

    /// A request to sign: headers in the order given; duplicates allowed.
    public struct Request: Sendable {
        public var method: String
        /// The path and query exactly as on the request line (`/a/b?x=1`).
        public var target: String
        public var headers: [(name: String, value: String)]
        public var body: Data

        public init(method: String, target: String, headers: [(name: String, value: String)], body: Data = Data()) {
            self.method = method
            self.target = target
            self.headers = headers
            self.body = body
        }
    }

    /// What signing produced: the headers to add, and the intermediate texts (for tests and debugging).
    public struct Signature: Sendable {
        public var headersToAdd: [(name: String, value: String)]
        public var canonicalRequest: String
        public var stringToSign: String
        public var signature: String
    }

    public var credentials: Credentials
    public var region: String
    public var service: String
    /// Remove `.`/`..` segments and repeated slashes from the path (every service but S3).
    public var normalizePath = true
    /// Sign `X-Amz-Security-Token` (the default); false adds it after signing, as some services require.
    public var signSessionToken = true
    /// Add and sign `X-Amz-Content-SHA256`.
    public var signBodyHashHeader = false

    public init(credentials: Credentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// Signs `request` as of `date`.
    public func sign(_ request: Request, date: Date) -> Signature {
        let amzDate = Self.format(date, "yyyyMMdd'T'HHmmss'Z'")
        let day = String(amzDate.prefix(8))
        let bodyHash = Hex.encode(SHA256.hash(data: request.body))

        var headers = request.headers
        var added: [(name: String, value: String)] = []
        if !headers.contains(where: { $0.name.lowercased() == "x-amz-date" }) { added.append(("X-Amz-Date", amzDate)) }
        if signBodyHashHeader { added.append(("X-Amz-Content-SHA256", bodyHash)) }
        if let token = credentials.sessionToken, signSessionToken { added.append(("X-Amz-Security-Token", token)) }
        headers += added

        // Canonical headers: lowercase names, sorted; values trimmed with inner runs of spaces collapsed; repeated
        // names joined with commas in the order they came.
        var grouped: [String: [String]] = [:]
        for (name, value) in headers {
            grouped[name.lowercased(), default: []].append(Self.collapse(value))
        }
        let sortedHeaders = grouped.sorted { $0.key < $1.key }
        let canonicalHeaders = sortedHeaders.map { "\($0.key):\($0.value.joined(separator: ","))\n" }.joined()
        let signedHeaders = sortedHeaders.map(\.key).joined(separator: ";")

        let (path, query) = Self.split(request.target)
        let canonicalRequest = [
            request.method.uppercased(), canonicalPath(path), Self.canonicalQuery(query), canonicalHeaders,
            signedHeaders,
            bodyHash,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope, Hex.encode(SHA256.hash(data: Data(canonicalRequest.utf8))),
        ].joined(separator: "\n")

        var key = SymmetricKey(data: Data("AWS4\(credentials.secretAccessKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        let signature = Hex.encode(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key))

        var toAdd = added
        if let token = credentials.sessionToken, !signSessionToken {
            toAdd.insert(("X-Amz-Security-Token", token), at: 0)
        }
        toAdd.append(
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), "
                    + "SignedHeaders=\(signedHeaders), Signature=\(signature)"
            ))
        return Signature(
            headersToAdd: toAdd, canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature)
    }

    func canonicalPath(_ path: String) -> String {
        var path = path.isEmpty ? "/" : path
        if normalizePath {
            var segments: [Substring] = []
            for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
                switch segment {
                case ".": continue
                case "..": _ = segments.popLast()
                default: segments.append(segment)
                }
            }
            let trailing = path.hasSuffix("/") || path.hasSuffix("/.") || path.hasSuffix("/..")
            path = "/" + segments.joined(separator: "/") + (trailing && !segments.isEmpty ? "/" : "")
        }
        return path.split(separator: "/", omittingEmptySubsequences: false).map { Self.encode(String($0)) }
            .joined(separator: "/")
    }

    static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        let pairs = query.split(separator: "&").map { item -> (String, String) in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
            return (encode(key), encode(value))
        }
        return pairs.sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(
            separator: "&")
    }

    /// RFC 3986 encoding: everything but unreserved characters, as `%XX` in uppercase.
    static func encode(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x2E, 0x5F, 0x7E:
                result.unicodeScalars.append(UnicodeScalar(byte))
            default: result += String(format: "%%%02X", byte)
            }
        }
        return result
    }

    static func collapse(_ value: String) -> String {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }).joined(separator: " ")
    }

    static func split(_ target: String) -> (String, String) {
        guard let mark = target.firstIndex(of: "?") else { return (target, "") }
        return (String(target[..<mark]), String(target[target.index(after: mark)...]))
    }

    static func format(_ date: Date, _ pattern: String) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = pattern
        return formatter.string(from: date)
    }
}
