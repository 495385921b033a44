import AsyncHTTPClient
import Foundation
import KeyhavenCore
import KeyhavenTestSupport
import Testing

@testable import KeyhavenProviders

@Suite("Provider verification against checking fakes", .serialized)
struct VerifierTests {
    /// Runs `body` with the fakes and a client, and fails if a fake saw something it did not expect.
    func withFakes(_ body: (FakeProviders, HTTPClient) async throws -> Void) async throws {
        let fakes = try await FakeProviders.start()
        let client = VerificationContext.makeClient()
        do {
            try await body(fakes, client)
        } catch {
            try? await client.shutdown()
            await fakes.stop()
            throw error
        }
        #expect(fakes.unexpected.isEmpty, "\(fakes.unexpected)")
        try await client.shutdown()
        await fakes.stop()
    }

    static let goodAWS = Credentials.aws(accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret, sessionToken: nil)

    func cases(_ fakes: FakeProviders) -> [(IntegrationType, good: Credentials, bad: Credentials)] {
        [
            (.openai, .apiKey(FakeProviders.openAIKey), .apiKey("sk-wrong-openai-key-000000000")),
            (.anthropic, .apiKey(FakeProviders.anthropicKey), .apiKey("sk-ant-wrong-key-0000000000")),
            (.gemini, .apiKey(FakeProviders.geminiKey), .apiKey("AIza" + String(repeating: "W", count: 35))),
            (.googleCloud, .googleServiceAccount(fakes.googleAccount), .googleServiceAccount(fakes.googleStrangerAccount)),
            (.aws, Self.goodAWS, .aws(accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: String(repeating: "x", count: 40), sessionToken: nil)),
            (.azure, .azure(tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient, clientSecret: FakeProviders.azureSecret),
             .azure(tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient, clientSecret: "wrong~secret~value")),
        ]
    }

    @Test("every provider: good credentials connect, bad ones are invalid")
    func goodAndBad() async throws {
        try await withFakes { fakes, client in
            let context = VerificationContext(client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: true))
            for (type, good, bad) in cases(fakes) {
                let connected = await Verifiers.verify(type, credentials: good, config: [:], in: context)
                #expect(connected.outcome == .connected, "\(type): \(connected.outcome) \(connected.providerMessage ?? "")")
                let refused = await Verifiers.verify(type, credentials: bad, config: [:], in: context)
                #expect(refused.outcome == .invalidCredentials, "\(type): \(refused.outcome) \(refused.providerMessage ?? "")")
                #expect(refused.errorMessage?.isEmpty == false)
            }
        }
    }

    @Test("details: the AWS account and ARN, the number of models")
    func details() async throws {
        try await withFakes { fakes, client in
            let context = VerificationContext(client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: true))
            let aws = await Verifiers.verify(.aws, credentials: Self.goodAWS, config: ["region": "eu-west-1"], in: context)
            #expect(aws.details["arn"] == .string("arn:aws:iam::123456789012:user/keyhaven"))
            #expect(aws.details["account_id"] == .string("123456789012"))
            // With a session token, signed as X-Amz-Security-Token.
            let temporary = Credentials.aws(accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret, sessionToken: "FwoGZXIvYXdzEXAMPLE//token+value=")
            #expect(await Verifiers.verify(.aws, credentials: temporary, config: [:], in: context).outcome == .connected)
            let openai = await Verifiers.verify(.openai, credentials: .apiKey(FakeProviders.openAIKey), config: ["organization": "org-fake"], in: context)
            #expect(openai.details["model_count"] == .number(3))
        }
    }

    @Test("provider-specific answers: a restricted OpenAI key, rate limits, expired AWS and Azure credentials, unknown Azure tenant and app")
    func mappedErrors() async throws {
        try await withFakes { fakes, client in
            let context = VerificationContext(client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: true))
            let expectations: [(IntegrationType, Credentials, VerificationOutcome, String?)] = [
                (.openai, .apiKey(FakeProviders.openAIRestrictedKey), .insufficientPermissions, "Missing scopes"),
                (.openai, .apiKey("sk-fake-ratelimited-0000000000"), .rateLimited, nil),
                (.aws, .aws(accessKeyID: FakeProviders.awsExpiredAccessKeyID, secretAccessKey: FakeProviders.awsSecret, sessionToken: "token-value-123"), .expired, "ExpiredToken"),
                (.aws, .aws(accessKeyID: "AKIAUNKNOWNKEY000001", secretAccessKey: FakeProviders.awsSecret, sessionToken: nil), .invalidCredentials, "InvalidClientTokenId"),
                (.azure, .azure(tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient, clientSecret: FakeProviders.azureExpiredSecret), .expired, "AADSTS7000222"),
                (.azure, .azure(tenantID: "99999999-9999-9999-9999-999999999999", clientID: FakeProviders.azureClient, clientSecret: FakeProviders.azureSecret), .invalidCredentials, "AADSTS90002"),
                (.azure, .azure(tenantID: FakeProviders.azureTenant, clientID: "00000000-0000-0000-0000-000000000001", clientSecret: FakeProviders.azureSecret), .invalidCredentials, "AADSTS700016"),
                (.azure, .azure(tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient, clientSecret: "wrong~secret"), .invalidCredentials, "AADSTS7000215"),
            ]
            for (type, credentials, outcome, mention) in expectations {
                let result = await Verifiers.verify(type, credentials: credentials, config: [:], in: context)
                #expect(result.outcome == outcome, "\(type): \(result.outcome) \(result.providerMessage ?? "")")
                if let mention { #expect(result.errorMessage?.contains(mention) == true, "\(result.errorMessage ?? "")") }
            }
        }
    }

    @Test("an echoed credential keeps at most 4 of its characters in the message")
    func sanitising() async throws {
        try await withFakes { fakes, client in
            let context = VerificationContext(client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: true))
            let key = "sk-echoed-canary-key-7f3a9b2c1d"
            let openai = await Verifiers.verify(.openai, credentials: .apiKey(key), config: [:], in: context)
            let secret = "echoed~azure~canary~4b7e"
            let azure = await Verifiers.verify(.azure, credentials: .azure(tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient, clientSecret: secret), config: [:], in: context)
            #expect(openai.errorMessage?.contains("[redacted]") == true, "\(openai.errorMessage ?? "")")
            for (message, credential) in [(openai.errorMessage ?? "", key), (azure.errorMessage ?? "", secret)] {
                let characters = Array(credential)
                for start in 0...(characters.count - 5) {
                    #expect(!message.contains(String(characters[start..<start + 5])), "\(message)")
                }
            }
        }
    }

    @Test("a provider that is down or hangs is unreachable within the timeout plus one second")
    func downAndHanging() async throws {
        try await withFakes { fakes, client in
            let timeout = Duration.seconds(3)
            for endpoints in [fakes.downEndpoints(), fakes.endpoints(prefix: "/hang")] {
                let context = VerificationContext(client: client, endpoints: endpoints, egress: EgressPolicy(allowPrivate: true), timeout: timeout)
                try await withThrowingTaskGroup(of: (IntegrationType, VerificationOutcome, Duration).self) { group in
                    for (type, good, _) in cases(fakes) {
                        group.addTask {
                            let start = ContinuousClock.now
                            let result = await Verifiers.verify(type, credentials: good, config: [:], in: context)
                            return (type, result.outcome, start.duration(to: .now))
                        }
                    }
                    for try await (type, outcome, elapsed) in group {
                        #expect(outcome == .unreachable, "\(type): \(outcome)")
                        #expect(elapsed < timeout + .seconds(1), "\(type) took \(elapsed)")
                    }
                }
            }
        }
    }

    @Test("a service account's token_uri on 127.0.0.1, 169.254.169.254 or 10.0.0.1 is refused unless private egress is allowed")
    func egress() async throws {
        try await withFakes { fakes, client in
            let local = fakes.baseURL.absoluteString + "/google/token"
            for uri in [local, "http://169.254.169.254/computeMetadata/v1/token", "http://10.0.0.1/token"] {
                var account = fakes.googleAccount
                account["token_uri"] = .string(uri)
                let off = VerificationContext(client: client, endpoints: ProviderEndpoints(), egress: EgressPolicy(allowPrivate: false), timeout: .seconds(2))
                let refused = await Verifiers.verify(.googleCloud, credentials: .googleServiceAccount(account), config: [:], in: off)
                #expect(refused.outcome == .endpointNotAllowed, "\(uri): \(refused.outcome)")
                // With the policy on, the endpoint is used. Only the local fake is actually called: tests talk to
                // 127.0.0.1 alone, so for the other two the policy's decision is checked without a request.
                let allowing = EgressPolicy(allowPrivate: true)
                if uri == local {
                    let on = VerificationContext(client: client, endpoints: ProviderEndpoints(), egress: allowing)
                    let used = await Verifiers.verify(.googleCloud, credentials: .googleServiceAccount(account), config: [:], in: on)
                    #expect(used.outcome == .connected, "\(uri): \(used.outcome)")
                } else {
                    let url = try #require(URL(string: uri))
                    #expect(allowing.acceptsUserEndpoint(url, allowedHosts: GoogleCloudVerifier.allowedHosts))
                    try await allowing.check(url)
                    #expect(!EgressPolicy(allowPrivate: false).acceptsUserEndpoint(url, allowedHosts: GoogleCloudVerifier.allowedHosts))
                    await #expect(throws: EgressPolicy.Refusal.self) { try await EgressPolicy(allowPrivate: false).check(url) }
                }
            }
            // The check is made on resolved addresses, not on the text: a name that resolves to loopback is refused.
            await #expect(throws: EgressPolicy.Refusal.privateAddress("localhost")) {
                try await EgressPolicy(allowPrivate: false).check(URL(string: "https://localhost/token")!)
            }
            // The operator's own override to a private address is refused too while the policy is off.
            let off = VerificationContext(client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: false))
            #expect(await Verifiers.verify(.openai, credentials: .apiKey(FakeProviders.openAIKey), config: [:], in: off).outcome == .endpointNotAllowed)
        }
    }

    @Test("private, loopback, link-local and metadata addresses are recognised; public ones are not")
    func addressRanges() {
        let privateAddresses: [[UInt8]] = [
            [127, 0, 0, 1], [10, 1, 2, 3], [172, 16, 0, 1], [172, 31, 255, 255], [192, 168, 1, 1], [169, 254, 169, 254],
            [100, 64, 0, 1], [0, 0, 0, 0], [224, 0, 0, 1],
            Array(repeating: 0, count: 15) + [1], [0xFD, 0x00, 0x0E, 0xC2] + Array(repeating: 0, count: 11) + [0x54],
            [0xFE, 0x80] + Array(repeating: 0, count: 14), Array(repeating: 0, count: 10) + [0xFF, 0xFF, 10, 0, 0, 1],
        ]
        for address in privateAddresses { #expect(EgressPolicy.isPrivate(address), "\(address)") }
        for address: [UInt8] in [[8, 8, 8, 8], [172, 32, 0, 1], [142, 250, 1, 1], [0x26, 0x07, 0xF8, 0xB0] + Array(repeating: 0, count: 12)] {
            #expect(!EgressPolicy.isPrivate(address), "\(address)")
        }
    }
}
