import Foundation
import KeyhavenApp
import KeyhavenCore
import KeyhavenStorage
import KeyhavenTestSupport
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    func load(_ environment: [String: String], flags: [String: String] = [:], dotenv: String? = nil) async throws
        -> KeyhavenConfiguration
    {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let envFile = directory.path + "/.env"
        if let dotenv { try dotenv.write(toFile: envFile, atomically: true, encoding: .utf8) }
        let reader = try await KeyhavenConfiguration.reader(
            overrides: flags, environment: environment, environmentFile: envFile)
        return try KeyhavenConfiguration(reader: reader)
    }

    @Test("defaults: SQLite in ./data, a keyring file beside it, 127.0.0.1:8080")
    func defaults() async throws {
        let configuration = try await load([:])
        #expect(configuration.database == .sqlite(path: "./data/keyhaven.sqlite"))
        #expect(configuration.keyring.file?.path == "./data/keyring.json")
        #expect(configuration.keyring.environmentKey == nil)
        #expect(configuration.host == "127.0.0.1")
        #expect(configuration.port == 8080)
        #expect(configuration.allowSignup)
        #expect(configuration.logFormat == .text)
        #expect(configuration.requestHeadTimeout == .seconds(30))
        #expect(configuration.requestBodyTimeout == .seconds(60))
        #expect(configuration.databaseConnectTimeout == .seconds(10))
        #expect(configuration.databaseStatementTimeout == .seconds(30))
        #expect(configuration.databaseLockTimeout == .seconds(10))
        let short = try await load([
            "KEYHAVEN_REQUEST_HEAD_TIMEOUT": "5", "KEYHAVEN_REQUEST_BODY_TIMEOUT": "7",
            "KEYHAVEN_DATABASE_STATEMENT_TIMEOUT": "2", "KEYHAVEN_DATABASE_LOCK_TIMEOUT": "1",
        ])
        #expect(short.requestHeadTimeout == .seconds(5))
        #expect(short.requestBodyTimeout == .seconds(7))
        #expect(short.databaseStatementTimeout == .seconds(2))
        #expect(short.databaseLockTimeout == .seconds(1))
    }

    @Test("flags beat the environment, which beats the .env file")
    func precedence() async throws {
        let dotenv = "KEYHAVEN_PORT=7000\nKEYHAVEN_HOST=0.0.0.0\nKEYHAVEN_LOG_FORMAT=json\n"
        let configuration = try await load(["KEYHAVEN_PORT": "7001"], flags: ["keyhaven.port": "7002"], dotenv: dotenv)
        #expect(configuration.port == 7002)
        #expect(configuration.host == "0.0.0.0")
        #expect(configuration.logFormat == .json)
        #expect(try await load(["KEYHAVEN_PORT": "7001"], dotenv: dotenv).port == 7001)
    }

    @Test("the master key and the database password never appear when the configuration is printed")
    func secretsAreNotPrinted() async throws {
        let key = Fixtures.masterKeyText()
        let configuration = try await load([
            "KEYHAVEN_MASTER_KEY": key, "KEYHAVEN_DATABASE_URL": "postgres://vault:pg-canary-pass@127.0.0.1:5432/kh",
        ])
        #expect(configuration.keyring.environmentKey?.id == "primary")
        #expect(configuration.keyring.file == nil)
        let printed = "\(configuration) \(String(reflecting: configuration))"
        #expect(!printed.contains(key))
        #expect(!printed.contains("pg-canary-pass"))
        #expect(printed.contains("master_key=<redacted>"))
    }

    @Test("provider endpoint overrides and the egress switch are read from KEYHAVEN_PROVIDER_<NAME>_URL")
    func providers() async throws {
        let configuration = try await load([
            "KEYHAVEN_PROVIDER_OPENAI_URL": "http://127.0.0.1:9000/openai",
            "KEYHAVEN_PROVIDER_GOOGLE_CLOUD_URL": "https://token.internal.example/token",
            "KEYHAVEN_PROVIDER_AWS_IAM_URL": "http://127.0.0.1:9000/iam",
            "KEYHAVEN_PROVIDER_GOOGLE_IAM_URL": "http://127.0.0.1:9000/google-iam",
            "KEYHAVEN_PROVIDER_AZURE_GRAPH_URL": "http://127.0.0.1:9000/graph",
            "KEYHAVEN_EGRESS_ALLOW_PRIVATE": "true", "KEYHAVEN_VERIFICATION_WORKER": "false",
        ])
        #expect(configuration.providerEndpoints.base(.awsIAM).absoluteString == "http://127.0.0.1:9000/iam")
        #expect(configuration.providerEndpoints.base(.googleIAM).absoluteString == "http://127.0.0.1:9000/google-iam")
        #expect(configuration.providerEndpoints.base(.azureGraph).absoluteString == "http://127.0.0.1:9000/graph")
        #expect(configuration.providerEndpoints.override(.openai)?.absoluteString == "http://127.0.0.1:9000/openai")
        #expect(
            configuration.providerEndpoints.override(.googleCloud)?.absoluteString
                == "https://token.internal.example/token")
        #expect(configuration.providerEndpoints.override(.aws) == nil)
        #expect(configuration.providerEndpoints.base(.aws).absoluteString == "https://sts.amazonaws.com")
        #expect(configuration.egressAllowPrivate && !configuration.runVerificationWorker)
        let defaults = try await load([:])
        #expect(!defaults.egressAllowPrivate && defaults.runVerificationWorker)
        await #expect(
            throws: KeyhavenError.configuration("KEYHAVEN_PROVIDER_AZURE_URL must be an http:// or https:// URL")
        ) {
            _ = try await load(["KEYHAVEN_PROVIDER_AZURE_URL": "login.example"])
        }
        await #expect(
            throws: KeyhavenError.configuration("KEYHAVEN_PROVIDER_AZURE_GRAPH_URL must be an http:// or https:// URL")
        ) {
            _ = try await load(["KEYHAVEN_PROVIDER_AZURE_GRAPH_URL": "graph.example"])
        }
        #expect(defaults.providerEndpoints.base(.awsIAM).absoluteString == "https://iam.amazonaws.com")
    }

    @Test("bad values are refused with the setting's name and without echoing a secret")
    func badValues() async throws {
        let cases: [([String: String], String)] = [
            (["KEYHAVEN_PORT": "eighty"], "KEYHAVEN_PORT"),
            (["KEYHAVEN_PORT": "70000"], "KEYHAVEN_PORT"),
            (["KEYHAVEN_DATABASE_URL": "mysql://root:pw@x/db"], "KEYHAVEN_DATABASE_URL"),
            (["KEYHAVEN_MASTER_KEY": "c2VjcmV0LWJ1dC1zaG9ydA=="], "KEYHAVEN_MASTER_KEY"),
            (["KEYHAVEN_ALLOW_SIGNUP": "maybe"], "KEYHAVEN_ALLOW_SIGNUP"),
            (["KEYHAVEN_LOG_LEVEL": "loud"], "KEYHAVEN_LOG_LEVEL"),
            (["KEYHAVEN_LOG_FORMAT": "xml"], "KEYHAVEN_LOG_FORMAT"),
            (["KEYHAVEN_PUBLIC_URL": "ftp://x"], "KEYHAVEN_PUBLIC_URL"),
            (["KEYHAVEN_REQUEST_HEAD_TIMEOUT": "0"], "KEYHAVEN_REQUEST_HEAD_TIMEOUT"),
            (["KEYHAVEN_REQUEST_BODY_TIMEOUT": "soon"], "KEYHAVEN_REQUEST_BODY_TIMEOUT"),
            (["KEYHAVEN_DATABASE_CONNECT_TIMEOUT": "-1"], "KEYHAVEN_DATABASE_CONNECT_TIMEOUT"),
            // 0 would turn PostgreSQL's timeout off.
            (["KEYHAVEN_DATABASE_STATEMENT_TIMEOUT": "0"], "KEYHAVEN_DATABASE_STATEMENT_TIMEOUT"),
            (["KEYHAVEN_DATABASE_LOCK_TIMEOUT": "3601"], "KEYHAVEN_DATABASE_LOCK_TIMEOUT"),
            // External JWTs are checked for issuer and audience always, so both must be configured.
            (["KEYHAVEN_JWT_HS256_SECRET": "a-jwt-secret-long-enough-0123456789abc"], "KEYHAVEN_JWT_HS256_ISSUER"),
            (
                [
                    "KEYHAVEN_JWT_HS256_SECRET": "a-jwt-secret-long-enough-0123456789abc",
                    "KEYHAVEN_JWT_HS256_ISSUER": "https://auth.example",
                ],
                "KEYHAVEN_JWT_HS256_AUDIENCE"
            ),
        ]
        for (environment, name) in cases {
            do {
                _ = try await load(environment)
                Issue.record("\(name) was accepted")
            } catch let error as KeyhavenError {
                #expect(error.message.contains(name))
                #expect(!error.message.contains("c2VjcmV0LWJ1dC1zaG9ydA"))
                #expect(!error.message.contains(":pw@"))
            }
        }
    }
}
