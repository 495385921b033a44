import Foundation
import Testing

@testable import KeyhavenProviders

/// The header-signing cases of the AWS SigV4 test suite (Apache-2.0, see Fixtures/aws-sigv4/LICENSE and NOTICE).
@Suite("AWS Signature Version 4")
struct SigV4Tests {
    static let root = Bundle.module.url(forResource: "aws-sigv4", withExtension: nil, subdirectory: "Fixtures")!

    static var cases: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? [])
            .filter { !$0.hasPrefix(".") && !["LICENSE", "NOTICE"].contains($0) }.sorted()
    }

    struct Context: Decodable {
        struct Credentials: Decodable {
            var accessKeyId: String
            var secretAccessKey: String
            var token: String?
        }
        var credentials: Credentials
        var region: String
        var service: String
        var timestamp: String
        var normalize: Bool
        var signBody: Bool
        var omitSessionToken: Bool?
    }

    func file(_ name: String, _ file: String) throws -> String {
        try String(contentsOf: Self.root.appendingPathComponent(name).appendingPathComponent(file), encoding: .utf8)
    }

    /// Parses the suite's raw request: request line, headers (continuation lines start with whitespace), body.
    func parse(_ text: String) -> SigV4Signer.Request {
        let (head, body): (Substring, Substring) = {
            if let range = text.range(of: "\n\n") { return (text[..<range.lowerBound], text[range.upperBound...]) }
            return (Substring(text), "")
        }()
        var lines = head.split(separator: "\n", omittingEmptySubsequences: false)
        let requestLine = lines.removeFirst().split(separator: " ")
        var headers: [(name: String, value: String)] = []
        for line in lines where !line.isEmpty {
            if line.first == " " || line.first == "\t" {
                headers[headers.count - 1].value += "\n" + line
            } else if let colon = line.firstIndex(of: ":") {
                headers.append((String(line[..<colon]), String(line[line.index(after: colon)...])))
            }
        }
        return SigV4Signer.Request(
            method: String(requestLine[0]), target: requestLine.dropFirst().dropLast().joined(separator: " "),
            headers: headers, body: Data(body.utf8))
    }

    @Test("the suite has the cases the signer must pass")
    func suiteIsComplete() {
        for required in [
            "get-vanilla", "post-sts-header-before", "post-sts-header-after", "get-vanilla-with-session-token",
            "get-relative-relative-normalized", "get-slashes-normalized", "get-space-normalized", "get-utf8",
        ] {
            #expect(Self.cases.contains(required))
        }
        #expect(Self.cases.count >= 38)
    }

    @Test("canonical request, string to sign and signature match the suite", arguments: SigV4Tests.cases)
    func vector(name: String) throws {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let context = try decoder.decode(Context.self, from: Data(try file(name, "context.json").utf8))
        var signer = SigV4Signer(
            credentials: .init(
                accessKeyID: context.credentials.accessKeyId, secretAccessKey: context.credentials.secretAccessKey,
                sessionToken: context.credentials.token),
            region: context.region, service: context.service)
        signer.normalizePath = context.normalize
        signer.signBodyHashHeader = context.signBody
        signer.signSessionToken = !(context.omitSessionToken ?? false)
        let date = try #require(ISO8601DateFormatter().date(from: context.timestamp))
        let result = signer.sign(parse(try file(name, "request.txt")), date: date)
        #expect(result.canonicalRequest == (try file(name, "header-canonical-request.txt")))
        #expect(result.stringToSign == (try file(name, "header-string-to-sign.txt")))
        #expect(
            result.signature == (try file(name, "header-signature.txt")).trimmingCharacters(in: .whitespacesAndNewlines)
        )
        let signed = try file(name, "header-signed-request.txt")
        let authorization = try #require(result.headersToAdd.first { $0.name == "Authorization" }?.value)
        #expect(signed.contains("Authorization:\(authorization)"))
    }
}
