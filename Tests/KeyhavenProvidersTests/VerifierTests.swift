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
        try await withFakeProviders { fakes, client, _ in try await body(fakes, client) }
    }

    static let goodAWS = Credentials.aws(
        accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret, sessionToken: nil)

    func cases(_ fakes: FakeProviders) -> [(IntegrationType, good: Credentials, bad: Credentials)] {
        [
            (.openai, .apiKey(FakeProviders.openAIKey), .apiKey("sk-wrong-openai-key-000000000")),
            (.anthropic, .apiKey(FakeProviders.anthropicKey), .apiKey("sk-ant-wrong-key-0000000000")),
            (.gemini, .apiKey(FakeProviders.geminiKey), .apiKey("AIza" + String(repeating: "W", count: 35))),
            (
                .googleCloud, .googleServiceAccount(fakes.googleAccount),
                .googleServiceAccount(fakes.googleStrangerAccount)
            ),
            (
                .aws, Self.goodAWS,
                .aws(
                    accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: String(repeating: "x", count: 40),
                    sessionToken: nil)
            ),
            (
                .azure,
                .azure(
                    tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient,
                    clientSecret: FakeProviders.azureSecret),
                .azure(
                    tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient,
                    clientSecret: "wrong~secret~value")
            ),
        ]
    }

    @Test("every provider: good credentials connect, bad ones are invalid")
    func goodAndBad() async throws {
        try await withFakes { fakes, client in
            let context = ProviderClient(
                client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: true))
            for (type, good, bad) in cases(fakes) {
                let connected = await Verifiers.verify(type, credentials: good, config: [:], in: context)
                #expect(
                    connected.outcome == .connected, "\(type): \(connected.outcome) \(connected.providerMessage ?? "")")
                let refused = await Verifiers.verify(type, credentials: bad, config: [:], in: context)
                #expect(
                    refused.outcome == .invalidCredentials,
                    "\(type): \(refused.outcome) \(refused.providerMessage ?? "")")
                #expect(refused.errorMessage?.isEmpty == false)
            }
        }
    }

    @Test("details: the AWS account and ARN, the number of models")
    func details() async throws {
        try await withFakes { fakes, client in
            let context = ProviderClient(
                client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: true))
            let aws = await Verifiers.verify(
                .aws, credentials: Self.goodAWS, config: ["region": "eu-west-1"], in: context)
            #expect(aws.details["arn"] == .string("arn:aws:iam::123456789012:user/keyhaven"))
            #expect(aws.details["account_id"] == .string("123456789012"))
            // With a session token, signed as X-Amz-Security-Token.
            let temporary = Credentials.aws(
                accessKeyID: FakeProviders.awsAccessKeyID, secretAccessKey: FakeProviders.awsSecret,
                sessionToken: "FwoGZXIvYXdzEXAMPLE//token+value=")
            #expect(
                await Verifiers.verify(.aws, credentials: temporary, config: [:], in: context).outcome == .connected)
            let openai = await Verifiers.verify(
                .openai, credentials: .apiKey(FakeProviders.openAIKey), config: ["organization": "org-fake"],
                in: context)
            #expect(openai.details["model_count"] == .number(3))
        }
    }

    @Test(
        """
        provider-specific answers: a restricted OpenAI key, rate limits, \
        expired AWS and Azure credentials, unknown Azure tenant and app
        """
    )
    func mappedErrors() async throws {
        try await withFakes { fakes, client in
            let context = ProviderClient(
                client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: true))
            let expectations: [(IntegrationType, Credentials, VerificationOutcome, String?)] = [
                (.openai, .apiKey(FakeProviders.openAIRestrictedKey), .insufficientPermissions, "Missing scopes"),
                (.openai, .apiKey("sk-fake-ratelimited-0000000000"), .rateLimited, nil),
                (
                    .aws,
                    .aws(
                        accessKeyID: FakeProviders.awsExpiredAccessKeyID, secretAccessKey: FakeProviders.awsSecret,
                        sessionToken: "tokenValue123"), .expired, "ExpiredToken"
                ),
                (
                    .aws,
                    .aws(
                        accessKeyID: "AKIAUNKNOWNKEY000001", secretAccessKey: FakeProviders.awsSecret, sessionToken: nil
                    ), .invalidCredentials, "InvalidClientTokenId"
                ),
                (
                    .azure,
                    .azure(
                        tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient,
                        clientSecret: FakeProviders.azureExpiredSecret), .expired, "AADSTS7000222"
                ),
                (
                    .azure,
                    .azure(
                        tenantID: "99999999-9999-9999-9999-999999999999", clientID: FakeProviders.azureClient,
                        clientSecret: FakeProviders.azureSecret), .invalidCredentials, "AADSTS90002"
                ),
                (
                    .azure,
                    .azure(
                        tenantID: FakeProviders.azureTenant, clientID: "00000000-0000-0000-0000-000000000001",
                        clientSecret: FakeProviders.azureSecret), .invalidCredentials, "AADSTS700016"
                ),
                (
                    .azure,
                    .azure(
                        tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient,
                        clientSecret: "wrong~secret"), .invalidCredentials, "AADSTS7000215"
                ),
            ]
            for (type, credentials, outcome, mention) in expectations {
                let result = await Verifiers.verify(type, credentials: credentials, config: [:], in: context)
                #expect(result.outcome == outcome, "\(type): \(result.outcome) \(result.providerMessage ?? "")")
                if let mention {
                    #expect(result.errorMessage?.contains(mention) == true, "\(result.errorMessage ?? "")")
                }
            }
        }
    }

    @Test("an echoed credential keeps at most 4 of its characters in the message")
    func sanitising() async throws {
        try await withFakes { fakes, client in
            let context = ProviderClient(
                client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: true))
            let key = "sk-echoed-canary-key-7f3a9b2c1d"
            let openai = await Verifiers.verify(.openai, credentials: .apiKey(key), config: [:], in: context)
            let secret = "echoed~azure~canary~4b7e"
            let azure = await Verifiers.verify(
                .azure,
                credentials: .azure(
                    tenantID: FakeProviders.azureTenant, clientID: FakeProviders.azureClient, clientSecret: secret),
                config: [:], in: context)
            #expect(openai.errorMessage?.contains("[redacted]") == true, "\(openai.errorMessage ?? "")")
            for (message, credential) in [(openai.errorMessage ?? "", key), (azure.errorMessage ?? "", secret)] {
                let characters = Array(credential)
                for start in 0...(characters.count - 5) {
                    #expect(!message.contains(String(characters[start..<start + 5])), "\(message)")
                }
            }
        }
    }

    @Test("a provider that is down or hangs is unreachable once the timeout passes, not after the minute it hangs")
    func downAndHanging() async throws {
        try await withFakes { fakes, client in
            let timeout = Duration.seconds(3)
            for endpoints in [fakes.downEndpoints(), fakes.endpoints(prefix: "/hang")] {
                let context = ProviderClient(
                    client: client, endpoints: endpoints, egress: EgressPolicy(allowPrivate: true), timeout: timeout)
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
                        // The hanging fake answers after a minute; a generous margin keeps a loaded machine from
                        // failing this.
                        #expect(elapsed < timeout + .seconds(20), "\(type) took \(elapsed)")
                    }
                }
            }
        }
    }

    @Test("a service account's token_uri off Google's hosts is never used, even with private egress allowed")
    func userEndpoints() async throws {
        try await withFakes { fakes, client in
            let local = fakes.baseURL.absoluteString + "/google/token"
            for uri in [
                local, "http://169.254.169.254/computeMetadata/v1/token", "http://10.0.0.1/token",
                "https://evil.example/token",
                "http://oauth2.googleapis.com/token", "https://oauth2.googleapis.com:8443/token",
                "https://user@oauth2.googleapis.com/token",
            ] {
                var account = fakes.googleAccount
                account["token_uri"] = .string(uri)
                for allowPrivate in [false, true] {
                    let egress = EgressPolicy(allowPrivate: allowPrivate)
                    let context = ProviderClient(
                        client: client, endpoints: ProviderEndpoints(), egress: egress, timeout: .seconds(2))
                    // Straight to the request builder: input validation already refuses most of these URIs.
                    let refused = await Verifiers.verifier(for: .googleCloud)?.verify(
                        .googleServiceAccount(account), config: [:], in: context)
                    #expect(refused?.outcome == .endpointNotAllowed, "\(uri): \(String(describing: refused?.outcome))")
                    let url = try #require(URL(string: uri))
                    #expect(!egress.acceptsUserEndpoint(url, allowedHosts: GoogleCloudVerifier.allowedHosts), "\(uri)")
                }
            }
            let google = try #require(URL(string: "https://oauth2.googleapis.com/token"))
            #expect(
                EgressPolicy(allowPrivate: false).acceptsUserEndpoint(
                    google, allowedHosts: GoogleCloudVerifier.allowedHosts))
            // The operator's own override may point at a private address only with the switch on.
            let on = ProviderClient(
                client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: true))
            #expect(
                await Verifiers.verify(.openai, credentials: .apiKey(FakeProviders.openAIKey), config: [:], in: on)
                    .outcome == .connected)
            let off = ProviderClient(
                client: client, endpoints: fakes.endpoints(), egress: EgressPolicy(allowPrivate: false))
            #expect(
                await Verifiers.verify(.openai, credentials: .apiKey(FakeProviders.openAIKey), config: [:], in: off)
                    .outcome == .endpointNotAllowed)
        }
    }

    @Test("the check is made on the resolved address, and that address is the one connected to")
    func pinnedResolution() async throws {
        try await withFakes { fakes, client in
            // A name that resolves to loopback is refused with the switch off ...
            await #expect(throws: EgressPolicy.Refusal.privateAddress("localhost")) {
                _ = try await EgressPolicy(allowPrivate: false).address(
                    for: URL(string: "https://localhost/token")!, origin: .operatorConfigured)
            }
            // ... and a user-supplied one even with it on.
            await #expect(throws: EgressPolicy.Refusal.privateAddress("localhost")) {
                _ = try await EgressPolicy(allowPrivate: true).address(
                    for: URL(string: "https://localhost/token")!, origin: .userSupplied)
            }
            let pinned = try await EgressPolicy(allowPrivate: true).address(
                for: URL(string: "http://localhost/")!, origin: .operatorConfigured)
            #expect(pinned == "127.0.0.1", "IPv4 first")
            // An operator endpoint given by name reaches the fake through the pinned address.
            let port = fakes.baseURL.port ?? 0
            let byName = ProviderEndpoints(overrides: [.openai: URL(string: "http://localhost:\(port)/openai")!])
            let context = ProviderClient(client: client, endpoints: byName, egress: EgressPolicy(allowPrivate: true))
            let result = await Verifiers.verify(
                .openai, credentials: .apiKey(FakeProviders.openAIKey), config: [:], in: context)
            #expect(result.outcome == .connected, "\(result.outcome)")
        }
    }

    @Test("a name that does not resolve is provider_unreachable, saying which name, not an egress refusal")
    func unresolvable() async throws {
        try await withFakes { _, client in
            let endpoints = ProviderEndpoints(overrides: [.openai: URL(string: "https://keyhaven-test.invalid")!])
            let context = ProviderClient(
                client: client, endpoints: endpoints, egress: EgressPolicy(allowPrivate: false), timeout: .seconds(3))
            let result = await Verifiers.verify(
                .openai, credentials: .apiKey(FakeProviders.openAIKey), config: [:], in: context)
            #expect(result.outcome == .unreachable)
            #expect(
                result.errorMessage == "The provider could not be reached. Could not resolve keyhaven-test.invalid.")
        }
    }

    @Test("private, loopback, link-local and metadata addresses are recognised; public ones are not")
    func addressRanges() {
        let privateAddresses: [[UInt8]] = [
            [127, 0, 0, 1], [10, 1, 2, 3], [172, 16, 0, 1], [172, 31, 255, 255], [192, 168, 1, 1],
            [169, 254, 169, 254],
            [100, 64, 0, 1], [0, 0, 0, 0], [224, 0, 0, 1],
            Array(repeating: 0, count: 15) + [1], [0xFD, 0x00, 0x0E, 0xC2] + Array(repeating: 0, count: 11) + [0x54],
            [0xFE, 0x80] + Array(repeating: 0, count: 14), Array(repeating: 0, count: 10) + [0xFF, 0xFF, 10, 0, 0, 1],
        ]
        let transition: [[UInt8]] = [
            [0x00, 0x64, 0xFF, 0x9B] + Array(repeating: 0, count: 8) + [10, 0, 0, 1],  // NAT64 64:ff9b::10.0.0.1
            [0x00, 0x64, 0xFF, 0x9B, 0x00, 0x01] + Array(repeating: 0, count: 6) + [8, 8, 8, 8],  // 64:ff9b:1::/48
            Array(repeating: 0, count: 12) + [169, 254, 169, 254],  // IPv4-compatible ::169.254.169.254
            [0x20, 0x02, 0x0A, 0x00, 0x00, 0x01] + Array(repeating: 0, count: 10),  // 6to4 2002:0a00:0001::
            [0x20, 0x01, 0x00, 0x00] + Array(repeating: 0, count: 12),  // Teredo 2001::/32
        ]
        for address in privateAddresses + transition { #expect(EgressPolicy.isPrivate(address), "\(address)") }
        for address: [UInt8] in [
            [8, 8, 8, 8], [172, 32, 0, 1], [142, 250, 1, 1], [0x26, 0x07, 0xF8, 0xB0] + Array(repeating: 0, count: 12),
        ] {
            #expect(!EgressPolicy.isPrivate(address), "\(address)")
        }
    }
}
