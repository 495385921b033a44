import Configuration
import Foundation
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenGateway
import KeyhavenProviders
import KeyhavenServices
import KeyhavenStorage
import KeyhavenWeb
import Logging

/// Every setting Keyhaven reads, read once at start into one typed value (SPEC §2).
///
/// Values come, highest precedence first, from command-line flags, the environment, and a `.env` file.
/// The master key and the database URL (which may hold a password) are secret: they never appear in
/// `description`, in logs, or in error messages.
public struct KeyhavenConfiguration: Sendable {
    /// The output format of log lines.
    public enum LogFormat: String, Sendable {
        case text
        case json
    }

    /// Where the data lives (`KEYHAVEN_DATABASE_URL`, default `sqlite://./data/keyhaven.sqlite`).
    public var database: DatabaseLocation
    /// Where the master keys come from (`KEYHAVEN_MASTER_KEY`, `KEYHAVEN_KEYRING_FILE`).
    public var keyring: KeyringSource
    /// The address to listen on (`KEYHAVEN_HOST`, default 127.0.0.1).
    public var host: String
    /// The port to listen on (`KEYHAVEN_PORT`, default 8080).
    public var port: Int
    /// The URL users reach the server at (`KEYHAVEN_PUBLIC_URL`); https turns on HSTS and secure cookies.
    public var publicURL: URL
    /// Whether anyone may sign up (`KEYHAVEN_ALLOW_SIGNUP`, default true).
    public var allowSignup: Bool
    /// The minimum level logged (`KEYHAVEN_LOG_LEVEL`, default info).
    public var logLevel: Logger.Level
    /// `text` or `json` (`KEYHAVEN_LOG_FORMAT`, default text).
    public var logFormat: LogFormat
    /// External JWT logins (`KEYHAVEN_JWT_HS256_SECRET`, `_ISSUER`, `_AUDIENCE`); nil turns them off.
    public var jwt: JWTSettings?
    /// Login and sign-up attempt limits.
    public var authRateLimits = AuthRateLimits()
    /// How many provider checks (creates, credential changes, tests) one user may start.
    public var checkRateLimit = CheckRateLimit()
    /// How many usage reports one service token may send: 600 a minute (a backend that calls more often reports
    /// several calls at once with `requests`).
    public var usageReportRateLimit = CheckRateLimit(perUser: 600, window: .seconds(60))
    /// How long a client has to send a request's head, from connecting or from the previous response (so also how
    /// long an idle keep-alive connection stays open): `KEYHAVEN_REQUEST_HEAD_TIMEOUT`, seconds, default 30.
    public var requestHeadTimeout: Duration = .seconds(30)
    /// How long a client has to send a request's body after its head, and the longest a response it does not read
    /// may stall its connection: `KEYHAVEN_REQUEST_BODY_TIMEOUT`, seconds, default 60.
    public var requestBodyTimeout: Duration = .seconds(60)
    /// How long a new PostgreSQL connection may take, handshake included, before the request waiting for it answers
    /// 503 (`KEYHAVEN_DATABASE_CONNECT_TIMEOUT`, seconds, default 10): lower it to fail faster when the database
    /// host stops answering.
    public var databaseConnectTimeout: Duration = .seconds(10)
    /// The longest a PostgreSQL statement may run (`KEYHAVEN_DATABASE_STATEMENT_TIMEOUT`, seconds, default 30); a
    /// query that has not answered a second after it, the server having stopped answering, fails too. Either
    /// answers 503. Backups, restores, key rotation and migrations run without it.
    public var databaseStatementTimeout: Duration = .seconds(30)
    /// The longest a PostgreSQL statement may wait for a lock (`KEYHAVEN_DATABASE_LOCK_TIMEOUT`, seconds, default
    /// 10), then 503.
    public var databaseLockTimeout: Duration = .seconds(10)
    /// How often the rotation engine looks for work (`KEYHAVEN_ROTATION_INTERVAL`, seconds, default 30).
    public var rotationInterval: Duration = .seconds(30)
    /// How often queued gateway usage is written (`KEYHAVEN_USAGE_FLUSH_MS`, milliseconds, default 100).
    public var usageFlushInterval: Duration = .milliseconds(100)
    /// The most of a metered gateway request's body read to meter it (`KEYHAVEN_GATEWAY_INSPECT_BYTES`, default
    /// 8 MiB); under a budget or token limit a longer body is refused.
    public var gatewayInspectLimit = MeteredEndpoints.inspectLimit
    /// Whether each connection's requests run on its event loop (`KEYHAVEN_REQUEST_EXECUTOR=event-loop`) or on
    /// Swift's shared threads (`shared`, the default); see ``LoopExecutorChannel``. `./scripts/bench` measures both:
    /// on its event loop a lone client's requests answer sooner, under many clients the shared threads serve more.
    public var requestsOnEventLoop = false
    /// How often the server writes a signed checkpoint of the audit chain (and once more at shutdown).
    public var auditCheckpointInterval: Duration = .seconds(300)
    /// Provider endpoint overrides (`KEYHAVEN_PROVIDER_<NAME>_URL`).
    public var providerEndpoints = ProviderEndpoints()
    /// Whether verification may call loopback, private, link-local and metadata addresses
    /// (`KEYHAVEN_EGRESS_ALLOW_PRIVATE`, default false).
    public var egressAllowPrivate = false
    /// Whether this instance runs the background work that calls providers — the verifier and the rotation engine
    /// (`KEYHAVEN_VERIFICATION_WORKER`, default true).
    public var runVerificationWorker = true
    /// The longest a provider check may take (SPEC §7: 10 s).
    public var verificationTimeout: Duration = .seconds(10)
    /// The proxies whose `X-Forwarded-For` is believed (`KEYHAVEN_TRUSTED_PROXIES`, comma-separated addresses).
    public var trustedProxies: Set<String> = []
    /// Scheduled backups (`KEYHAVEN_BACKUP_DIR` and the settings beside it); nil turns them off.
    public var scheduledBackups: ScheduledBackups?
    /// The bearer token `GET /metrics` requires (`KEYHAVEN_METRICS_TOKEN`, at least 32 characters). Secret.
    /// Without it and without `metricsAddress`, `/metrics` is not served at all.
    public var metricsToken: String?
    /// A second listen address that serves only `/metrics` (`KEYHAVEN_METRICS_ADDRESS`, `HOST:PORT`); when set,
    /// the public port no longer serves it.
    public var metricsAddress: ListenAddress?
    /// A second listen address that serves only the gateway (`KEYHAVEN_GATEWAY_ADDRESS`, `HOST:PORT`, default off):
    /// `/gateway/…` as NIO handlers on the event loops (``GatewayListener``), beside the public port, which serves it
    /// too.
    public var gatewayAddress: ListenAddress?
    /// The most memory, in bytes, that request bodies read whole before they are forwarded (fallback routes) may
    /// hold at once (`KEYHAVEN_BUFFERED_BODY_MEMORY_MB`, default 256 MiB); past it such a request answers 503.
    public var bufferedBodyMemory = 256 << 20
    /// The providers this server knows: the built-in catalog, with the entries of the file named by
    /// `KEYHAVEN_CATALOG_EXTRA` after them (SPEC §16). The runtime makes it the process's catalog.
    public var catalog = ProviderCatalog.current

    /// A host and port to listen on.
    public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int

        /// Creates the address.
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `HOST:PORT` or `[IPv6]:PORT`, or nil when it is neither.
        public init?(_ text: String) {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                (0...65535).contains(port)
            else { return nil }
            var host = String(text[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty, KeyhavenConfiguration.localURL(host: host, port: port) != nil else { return nil }
            self.init(host: host, port: port)
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// Settings for Supabase-style HS256 JWTs: the secret, and the issuer and audience every token must name.
    /// The secret is never printed.
    public struct JWTSettings: Sendable {
        public var secret: String
        public var issuer: String
        public var audience: String

        /// Creates the settings.
        public init(secret: String, issuer: String, audience: String) {
            self.secret = secret
            self.issuer = issuer
            self.audience = audience
        }
    }

    /// The keyring file used when neither `KEYHAVEN_MASTER_KEY` nor `KEYHAVEN_KEYRING_FILE` is set.
    public static let defaultKeyringFile = "./data/keyring.json"

    /// Creates a configuration directly (tests and embedding).
    public init(
        database: DatabaseLocation, keyring: KeyringSource, host: String = "127.0.0.1", port: Int = 8080,
        publicURL: URL? = nil, allowSignup: Bool = true, logLevel: Logger.Level = .info, logFormat: LogFormat = .text,
        jwt: JWTSettings? = nil
    ) {
        self.jwt = jwt
        self.database = database
        self.keyring = keyring
        self.host = host
        self.port = port
        self.publicURL = publicURL ?? Self.localURL(host: host, port: port) ?? URL(fileURLWithPath: "/")
        self.allowSignup = allowSignup
        self.logLevel = logLevel
        self.logFormat = logFormat
    }

    /// `http://HOST:PORT` (an IPv6 host in brackets), or nil when `host` is not a host name or an address.
    static func localURL(host: String, port: Int) -> URL? {
        let authority = host.contains(":") ? "[\(host)]" : host
        return URL(string: "http://\(authority):\(port)").flatMap { $0.host == nil ? nil : $0 }
    }

    /// Whether the server is reached over https.
    public var isHTTPS: Bool { publicURL.scheme == "https" }

    /// The built-in catalog with the entries of the file at `path`.
    ///
    /// - Throws: `KeyhavenError.configuration` naming the file and what is wrong with it.
    static func catalog(adding path: String) throws -> ProviderCatalog {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeyhavenError.configuration("KEYHAVEN_CATALOG_EXTRA: \(path) could not be read")
        }
        do {
            return try ProviderCatalog.builtIn().adding(ProviderCatalog.parse(data))
        } catch let invalid as ProviderCatalog.Invalid {
            throw KeyhavenError.configuration("KEYHAVEN_CATALOG_EXTRA: \(path): \(invalid.description)")
        }
    }

    /// Reads and checks every setting.
    ///
    /// - Throws: `KeyhavenError.configuration` naming the first bad setting; a bad master key is reported without
    ///   its value.
    public init(reader: ConfigReader) throws {
        func text(_ key: String, secret: Bool = false) -> String? {
            reader.string(forKey: ConfigKey(key), isSecret: secret).flatMap { $0.isEmpty ? nil : $0 }
        }
        database = try DatabaseLocation(url: text("keyhaven.database.url", secret: true) ?? DatabaseLocation.defaultURL)

        var environmentKey: MasterKey?
        if let material = text("keyhaven.master.key", secret: true) {
            let id = text("keyhaven.master.key.id") ?? "primary"
            do {
                environmentKey = try MasterKey(id: id, base64: material)
            } catch {
                throw KeyhavenError.configuration(
                    "KEYHAVEN_MASTER_KEY must be the base64 encoding of exactly 32 random bytes "
                        + "(for example: openssl rand -base64 32)")
            }
        }
        let keyringPath = text("keyhaven.keyring.file") ?? (environmentKey == nil ? Self.defaultKeyringFile : nil)
        keyring = KeyringSource(environmentKey: environmentKey, file: keyringPath.map(KeyringFile.init(path:)))

        host = text("keyhaven.host") ?? "127.0.0.1"
        let portText = text("keyhaven.port") ?? "8080"
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw KeyhavenError.configuration("KEYHAVEN_PORT must be a port number (0-65535), got \"\(portText)\"")
        }
        self.port = port
        if let url = text("keyhaven.public.url") {
            guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil
            else {
                throw KeyhavenError.configuration("KEYHAVEN_PUBLIC_URL must be an http:// or https:// URL")
            }
            publicURL = parsed
        } else {
            guard let derived = Self.localURL(host: host, port: port) else {
                throw KeyhavenError.configuration("KEYHAVEN_HOST must be a host name or an IP address")
            }
            publicURL = derived
        }
        allowSignup = try Self.bool(text("keyhaven.allow.signup"), name: "KEYHAVEN_ALLOW_SIGNUP", default: true)
        switch text("keyhaven.request.executor") {
        case "event-loop": requestsOnEventLoop = true
        case nil, "shared": requestsOnEventLoop = false
        default: throw KeyhavenError.configuration("KEYHAVEN_REQUEST_EXECUTOR must be event-loop or shared")
        }
        let levelText = text("keyhaven.log.level") ?? "info"
        guard let level = Logger.Level(rawValue: levelText.lowercased()) else {
            throw KeyhavenError.configuration(
                "KEYHAVEN_LOG_LEVEL must be one of trace, debug, info, notice, warning, error, critical")
        }
        logLevel = level
        let formatText = text("keyhaven.log.format") ?? "text"
        guard let format = LogFormat(rawValue: formatText.lowercased()) else {
            throw KeyhavenError.configuration("KEYHAVEN_LOG_FORMAT must be text or json")
        }
        logFormat = format
        // KEYHAVEN_PROVIDER_<NAME>_URL for each provider (`GOOGLE_CLOUD`) and management API (`AWS_IAM`).
        func providerURL(_ name: String) throws -> URL? {
            guard
                let value = text("keyhaven.provider.\(name.lowercased().replacingOccurrences(of: "_", with: ".")).url")
            else {
                return nil
            }
            guard let url = URL(string: value), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
                throw KeyhavenError.configuration("KEYHAVEN_PROVIDER_\(name)_URL must be an http:// or https:// URL")
            }
            return url
        }
        if let path = text("keyhaven.catalog.extra") {
            catalog = try Self.catalog(adding: path)
        }
        if let hosts = text("keyhaven.allowed.custom.hosts") {
            do {
                catalog = try catalog.allowing(
                    customHosts: hosts.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                        .filter { !$0.isEmpty })
            } catch let invalid as ProviderCatalog.Invalid {
                throw KeyhavenError.configuration("KEYHAVEN_ALLOWED_CUSTOM_HOSTS: \(invalid.description)")
            }
        }
        for entry in catalog.providers {
            if let url = try providerURL(entry.id.uppercased()) { providerEndpoints.overrides[entry.type] = url }
        }
        for service in ProviderService.allCases {
            if let url = try providerURL(service.rawValue) { providerEndpoints.services[service] = url }
        }
        egressAllowPrivate = try Self.bool(
            text("keyhaven.egress.allow.private"), name: "KEYHAVEN_EGRESS_ALLOW_PRIVATE", default: false)
        runVerificationWorker = try Self.bool(
            text("keyhaven.verification.worker"), name: "KEYHAVEN_VERIFICATION_WORKER", default: true)
        if let limit = text("keyhaven.check.limit") {
            guard let perUser = Int(limit), perUser > 0 else {
                throw KeyhavenError.configuration("KEYHAVEN_CHECK_LIMIT must be a positive whole number")
            }
            checkRateLimit.perUser = perUser
        }
        for (key, name, keyPath) in [
            ("keyhaven.request.head.timeout", "KEYHAVEN_REQUEST_HEAD_TIMEOUT", \Self.requestHeadTimeout),
            ("keyhaven.request.body.timeout", "KEYHAVEN_REQUEST_BODY_TIMEOUT", \Self.requestBodyTimeout),
            ("keyhaven.database.connect.timeout", "KEYHAVEN_DATABASE_CONNECT_TIMEOUT", \Self.databaseConnectTimeout),
            (
                "keyhaven.database.statement.timeout", "KEYHAVEN_DATABASE_STATEMENT_TIMEOUT",
                \Self.databaseStatementTimeout
            ),
            ("keyhaven.database.lock.timeout", "KEYHAVEN_DATABASE_LOCK_TIMEOUT", \Self.databaseLockTimeout),
        ] as [(String, String, WritableKeyPath<Self, Duration>)] {
            guard let value = text(key) else { continue }
            guard let seconds = Int(value), (1...3600).contains(seconds) else {
                throw KeyhavenError.configuration("\(name) must be a whole number of seconds from 1 to 3600")
            }
            self[keyPath: keyPath] = .seconds(seconds)
        }
        if let interval = text("keyhaven.rotation.interval") {
            guard let seconds = Int(interval), (1...86400).contains(seconds) else {
                throw KeyhavenError.configuration(
                    "KEYHAVEN_ROTATION_INTERVAL must be a whole number of seconds from 1 to 86400")
            }
            rotationInterval = .seconds(seconds)
        }
        if let interval = text("keyhaven.usage.flush.ms") {
            guard let milliseconds = Int(interval), (10...600_000).contains(milliseconds) else {
                throw KeyhavenError.configuration(
                    "KEYHAVEN_USAGE_FLUSH_MS must be a whole number of milliseconds from 10 to 600000")
            }
            usageFlushInterval = .milliseconds(milliseconds)
        }
        if let bytes = text("keyhaven.gateway.inspect.bytes") {
            guard let limit = Int(bytes), (65_536...(64 << 20)).contains(limit) else {
                throw KeyhavenError.configuration(
                    "KEYHAVEN_GATEWAY_INSPECT_BYTES must be a whole number of bytes from 65536 to 67108864")
            }
            gatewayInspectLimit = limit
        }
        if let proxies = text("keyhaven.trusted.proxies") {
            trustedProxies = Set(
                proxies.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }
        scheduledBackups = try Self.scheduledBackups(text)
        if let token = text("keyhaven.metrics.token", secret: true) {
            guard token.utf8.count >= 32, token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw KeyhavenError.configuration(
                    "KEYHAVEN_METRICS_TOKEN must be at least 32 printable ASCII characters (openssl rand -hex 32)")
            }
            metricsToken = token
        }
        if let address = text("keyhaven.metrics.address") {
            guard let parsed = ListenAddress(address) else {
                throw KeyhavenError.configuration(
                    "KEYHAVEN_METRICS_ADDRESS must be HOST:PORT, for example 127.0.0.1:9090")
            }
            metricsAddress = parsed
        }
        if let address = text("keyhaven.gateway.address") {
            guard let parsed = ListenAddress(address) else {
                throw KeyhavenError.configuration(
                    "KEYHAVEN_GATEWAY_ADDRESS must be HOST:PORT, for example 127.0.0.1:8081")
            }
            gatewayAddress = parsed
        }
        if let megabytes = text("keyhaven.buffered.body.memory.mb") {
            guard let value = Int(megabytes), (8...65536).contains(value) else {
                throw KeyhavenError.configuration(
                    "KEYHAVEN_BUFFERED_BODY_MEMORY_MB must be a whole number of MiB from 8 to 65536")
            }
            bufferedBodyMemory = value << 20
        }
        if let secret = text("keyhaven.jwt.hs256.secret", secret: true) {
            guard secret.utf8.count >= 32 else {
                throw KeyhavenError.configuration("KEYHAVEN_JWT_HS256_SECRET must be at least 32 characters")
            }
            guard let issuer = text("keyhaven.jwt.hs256.issuer"), let audience = text("keyhaven.jwt.hs256.audience")
            else {
                throw KeyhavenError.configuration(
                    "KEYHAVEN_JWT_HS256_ISSUER and KEYHAVEN_JWT_HS256_AUDIENCE "
                        + "must be set with KEYHAVEN_JWT_HS256_SECRET"
                )
            }
            jwt = JWTSettings(secret: secret, issuer: issuer, audience: audience)
        }
    }

    private static func scheduledBackups(_ text: (String, Bool) -> String?) throws -> ScheduledBackups? {
        guard let directory = text("keyhaven.backup.dir", false) else { return nil }
        let intervalText = text("keyhaven.backup.interval", false) ?? "24h"
        guard let interval = ScheduledBackups.parseInterval(intervalText) else {
            throw KeyhavenError.configuration(
                "KEYHAVEN_BACKUP_INTERVAL must be a whole number followed by s, m, h or d (for example 6h)")
        }
        let keepText = text("keyhaven.backup.keep", false) ?? "7"
        guard let keep = Int(keepText), (1...100_000).contains(keep) else {
            throw KeyhavenError.configuration("KEYHAVEN_BACKUP_KEEP must be a positive whole number")
        }
        let keyFile = text("keyhaven.backup.key.file", false)
        let passphraseFile = text("keyhaven.backup.passphrase.file", false)
        guard (keyFile == nil) != (passphraseFile == nil) else {
            throw KeyhavenError.configuration(
                "KEYHAVEN_BACKUP_DIR needs exactly one of KEYHAVEN_BACKUP_KEY_FILE and KEYHAVEN_BACKUP_PASSPHRASE_FILE")
        }
        let settings = ScheduledBackups(
            directory: directory, interval: interval, keep: keep, keyFile: keyFile, passphraseFile: passphraseFile,
            includeKeyring: try bool(
                text("keyhaven.backup.include.keyring", false), name: "KEYHAVEN_BACKUP_INCLUDE_KEYRING", default: false)
        )
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw KeyhavenError.configuration("KEYHAVEN_BACKUP_DIR \(directory) is not an existing folder")
        }
        do {
            _ = try settings.secret()
        } catch {
            throw KeyhavenError.configuration(
                "\(keyFile == nil ? "KEYHAVEN_BACKUP_PASSPHRASE_FILE" : "KEYHAVEN_BACKUP_KEY_FILE"): \(error)")
        }
        return settings
    }

    private static func bool(_ value: String?, name: String, default defaultValue: Bool) throws -> Bool {
        guard let value else { return defaultValue }
        switch value.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw KeyhavenError.configuration("\(name) must be true or false")
        }
    }

    /// A reader over, in order of precedence: `overrides` (command-line flags, keyed like
    /// `keyhaven.database.url`), the environment, and the `.env` file at `environmentFile` if it exists.
    ///
    /// - Throws: `KeyhavenError.configuration` if the `.env` file exists but cannot be parsed.
    public static func reader(
        overrides: [String: String] = [:], environment: [String: String]? = nil, environmentFile: String = ".env"
    ) async throws -> ConfigReader {
        let secrets: SecretsSpecifier<String, String> = .specific([
            "KEYHAVEN_MASTER_KEY", "KEYHAVEN_DATABASE_URL", "KEYHAVEN_JWT_HS256_SECRET", "KEYHAVEN_METRICS_TOKEN",
        ])
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        for (key, value) in overrides {
            values[AbsoluteConfigKey(ConfigKey(key))] = ConfigValue(
                .string(value), isSecret: key.contains("url") || key.contains("token"))
        }
        let environmentProvider =
            environment.map { EnvironmentVariablesProvider(environmentVariables: $0, secretsSpecifier: secrets) }
            ?? EnvironmentVariablesProvider(secretsSpecifier: secrets)
        let fileProvider: EnvironmentVariablesProvider
        do {
            fileProvider = try await EnvironmentVariablesProvider(
                environmentFilePath: .init(environmentFile), allowMissing: true, secretsSpecifier: secrets)
        } catch {
            throw KeyhavenError.configuration("cannot read the environment file \(environmentFile)")
        }
        return ConfigReader(providers: [
            InMemoryProvider(name: "flags", values: values), environmentProvider, fileProvider,
        ])
    }
}

extension KeyhavenConfiguration: CustomStringConvertible {
    /// The settings without any secret: the database URL loses its password, the master key shows as set or not.
    public var description: String {
        [
            "database=\(database)",
            "master_key=\(keyring.environmentKey == nil ? "unset" : "<redacted>")",
            "keyring_file=\(keyring.file?.path ?? "none")",
            "listen=\(host):\(port)",
            "public_url=\(publicURL.absoluteString)",
            "allow_signup=\(allowSignup)",
            "log_level=\(logLevel)",
            "log_format=\(logFormat.rawValue)",
            "jwt=\(jwt == nil ? "off" : "hs256")",
            "provider_overrides=\(providerEndpoints.overrides.keys.map(\.rawValue).sorted().joined(separator: ","))",
            "egress_allow_private=\(egressAllowPrivate)",
            "metrics=\(metricsAddress.map { "on_\($0)" } ?? (metricsToken == nil ? "off" : "public_port"))"
                + (metricsToken == nil ? "" : "_with_token"),
            "gateway_listener=\(gatewayAddress.map { "\($0)" } ?? "off")",
            "buffered_body_memory_mb=\(bufferedBodyMemory >> 20)",
            "request_executor=\(requestsOnEventLoop ? "event-loop" : "shared")",
            "scheduled_backups="
                + "\(scheduledBackups.map { "\($0.directory) every \($0.interval) keep \($0.keep)" } ?? "off")",
        ].joined(separator: " ")
    }
}

extension KeyhavenConfiguration {
    /// Opens ``database`` with the configured PostgreSQL timeouts.
    ///
    /// - Throws: what `Database.open` throws.
    func openDatabase(logger: Logger) async throws -> Database {
        try await Database.open(
            database, connectTimeout: databaseConnectTimeout, statementTimeout: databaseStatementTimeout,
            lockTimeout: databaseLockTimeout, logger: logger)
    }
}
