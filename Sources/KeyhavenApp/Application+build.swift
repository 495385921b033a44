import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdCore
import KeyhavenCore
import KeyhavenCrypto
import KeyhavenDatabase
import KeyhavenGateway
import KeyhavenPages
import KeyhavenProviders
import KeyhavenServices
import KeyhavenStorage
import KeyhavenWeb
import Logging
import NIOCore
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// The opened state of a Keyhaven deployment: the database (migrated), the checked keyring, and the stores.
/// Shared by the server, the CLI commands and the tests, so all of them start up the same way.
public struct KeyhavenRuntime: Sendable {
    /// The configuration it was opened with.
    public let configuration: KeyhavenConfiguration
    /// The connection pool.
    public let database: Database
    /// The master keys, checked against the database.
    public let keyring: LiveKeyring
    /// The envelope-encrypted secret store.
    public let secrets: SQLSecretStore
    /// Integrations and their credentials.
    public let integrations: SQLIntegrationStore
    /// Users.
    public let users: SQLUserStore
    /// Browser sessions.
    public let sessions: SQLSessionStore
    /// API tokens.
    public let tokens: SQLTokenStore
    /// The audit trail.
    public let audit: SQLAuditLog
    /// Login and sign-up limits.
    public let limiter: SQLRateLimiter
    /// The provider checks' limit (``CheckRateLimit``): counted in memory on SQLite, whose one instance sees every
    /// check, so a create is one commit; in the database on PostgreSQL, where instances share it.
    public let checkLimiter: any RateLimiter
    /// The client for provider checks.
    public let http: HTTPClient
    /// Runs provider checks and records them.
    public let verifier: VerificationRunner
    /// Verification metrics.
    public let metrics: ServerMetrics
    /// bcrypt, on its own thread pool.
    public let passwords: PasswordHasher
    /// The account rules: sign-up, login, sessions.
    public let accounts: Accounts
    /// Rotation policies and rotations.
    public let rotations: SQLRotationStore
    /// Organizations, members and invitations.
    public let organizations: SQLOrganizationStore
    /// Usage events and roll-ups.
    public let usage: SQLUsageStore
    /// Forwards provider requests by reference.
    public let gateway: Gateway
    /// Writes gateway usage in batches.
    public let usageRecorder: UsageRecorder
    /// Budgets and rate limits.
    public let limits: SQLLimitStore
    /// The gateway's admission checks against them.
    public let budgets: Budgets
    /// Fallback routes.
    public let routes: SQLRouteStore
    /// The imported price table and negotiated prices.
    public let priceStore: SQLPriceStore
    /// The logger everything below logs to.
    public let logger: Logger
    /// The memory that request bodies read whole (fallback routes) may hold at once, shared by every request.
    public let bufferedBodies: MemoryBudget

    /// Opens the database, applies pending migrations, and checks the keyring (SPEC §4).
    ///
    /// - Parameter allowKeyringCreation: whether a fresh, empty database may get a newly generated keyring
    ///   (`serve` only).
    /// - Throws: `KeyhavenError` with a one-line reason; nothing is left open on failure.
    public static func open(
        _ configuration: KeyhavenConfiguration, allowKeyringCreation: Bool, logger: Logger, database: Database? = nil
    ) async throws -> KeyhavenRuntime {
        // The operator's catalog first: integration types, endpoints and prices are all read from it.
        ProviderCatalog.install(configuration.catalog)
        let database = if let database { database } else { try await configuration.openDatabase(logger: logger) }
        do {
            let applied = try await Migrator(database: database).migrate()
            if !applied.isEmpty {
                logger.info(
                    "applied database migrations", metadata: ["migrations": "\(applied.joined(separator: ","))"])
            }
            let keyring = try await LiveKeyring.open(
                source: configuration.keyring, database: database, allowCreate: allowKeyringCreation, logger: logger)
            let secrets = SQLSecretStore(database: database, keyring: keyring, logger: logger)
            let audit = SQLAuditLog(
                database: database, keys: try await AuditKeys.open(database: database, keyring: keyring))
            let integrations = SQLIntegrationStore(database: database, secrets: secrets, audit: audit, logger: logger)
            let http = ProviderClient.makeClient()
            let metrics = ServerMetrics()
            let context = ProviderClient(
                client: http, endpoints: configuration.providerEndpoints,
                egress: EgressPolicy(allowPrivate: configuration.egressAllowPrivate),
                timeout: configuration.verificationTimeout)
            let users = SQLUserStore(database: database, audit: audit)
            let sessions = SQLSessionStore(database: database)
            let tokens = SQLTokenStore(database: database, audit: audit)
            let limiter = SQLRateLimiter(database: database)
            let passwords = PasswordHasher()
            let usage = SQLUsageStore(database: database, audit: audit)
            let limits = SQLLimitStore(database: database, audit: audit, usage: usage)
            let priceStore = SQLPriceStore(database: database, audit: audit)
            let prices = Prices(try PriceTable.bundled(), store: priceStore)
            if !(await prices.refresh()) {
                logger.error("the imported price table could not be read; the bundled one is used")
            }
            releaseFreedMemory()
            // One budget for every body held whole: fallback routes' requests, metered requests, JSON answers.
            let bufferedBodies = MemoryBudget(capacity: configuration.bufferedBodyMemory)
            let gateway = Gateway(
                endpoints: configuration.providerEndpoints, egress: context.egress, prices: prices,
                inspectLimit: configuration.gatewayInspectLimit, memory: bufferedBodies, tokens: context)
            let accounts = Accounts(
                users: users, sessions: sessions, tokens: tokens, audit: audit, limiter: limiter,
                limits: configuration.authRateLimits, hasher: passwords, allowSignup: configuration.allowSignup,
                sessionLifetime: SessionCookie(secure: configuration.isHTTPS).lifetime)
            return KeyhavenRuntime(
                configuration: configuration, database: database, keyring: keyring, secrets: secrets,
                integrations: integrations, users: users, sessions: sessions,
                tokens: tokens, audit: audit, limiter: limiter,
                checkLimiter: database.kind == .sqlite ? InProcessRateLimiter() : limiter, http: http,
                verifier: VerificationRunner(store: integrations, context: context, metrics: metrics, logger: logger),
                metrics: metrics, passwords: passwords, accounts: accounts,
                rotations: SQLRotationStore(
                    database: database, secrets: secrets, integrations: integrations, audit: audit),
                organizations: SQLOrganizationStore(database: database, audit: audit), usage: usage, gateway: gateway,
                usageRecorder: UsageRecorder(
                    store: usage, logger: logger, interval: configuration.usageFlushInterval, registry: metrics.registry
                ),
                limits: limits, budgets: Budgets(store: limits),
                routes: SQLRouteStore(database: database, audit: audit), priceStore: priceStore, logger: logger,
                bufferedBodies: bufferedBodies)
        } catch {
            await database.shutdown()
            throw error
        }
    }

    /// Closes the HTTP client and the database connections.
    public func shutdown() async {
        try? await http.shutdown()
        await gateway.shutdown()
        await passwords.shutdown()
        await database.shutdown()
    }
}

extension KeyhavenRuntime {
    /// Who may see or change what in a workspace.
    public var access: WorkspaceAccess { WorkspaceAccess(integrations: integrations, organizations: organizations) }

    /// What users do with integrations.
    public var integrationService: IntegrationService {
        IntegrationService(
            integrations: integrations, secrets: secrets, audit: audit, rotations: rotations, tester: verifier,
            limiter: checkLimiter, checks: configuration.checkRateLimit, access: access)
    }

    /// Organizations, members, invitations and service tokens.
    public var organizationService: OrganizationService {
        OrganizationService(organizations: organizations, tokens: tokens, access: access)
    }

    /// Usage reports and totals, budgets and rate limits, negotiated prices and fallback routes.
    public var usageService: UsageService {
        UsageService(
            usage: usage, integrations: integrations, limits: limits, budgets: budgets, prices: gateway.prices,
            priceStore: priceStore, routes: routes, limiter: limiter, reports: configuration.usageReportRateLimit,
            access: access)
    }

    /// Who may have an integration's credentials, read or through the gateway.
    public var credentialAccess: CredentialAccess {
        CredentialAccess(integrations: integrations, tokens: tokens, audit: audit, budgets: budgets, routes: routes)
    }

    /// The gateway's requests, for both of its front ends: the router's routes and the gateway's own listener.
    public var gatewayExchange: GatewayExchange {
        let accounting = GatewayAccounting(
            recorder: usageRecorder, prices: gateway.prices, budgets: budgets, metrics: metrics)
        return GatewayExchange(
            gateway: gateway, access: credentialAccess, record: accounting.record, bufferedBodies: bufferedBodies,
            pending: usageRecorder.pending)
    }
}

/// The one composition root: the HTTP application for a configuration, used by `serve` and by the tests.
///
/// - Throws: `KeyhavenError` if the database cannot be opened or the keyring does not fit it.
public func buildApplication(
    _ configuration: KeyhavenConfiguration, logger: Logger = Logger(label: "keyhaven")
) async throws -> some ApplicationProtocol {
    let runtime = try await KeyhavenRuntime.open(configuration, allowKeyringCreation: true, logger: logger)
    do {
        return try await buildApplication(runtime)
    } catch {
        await runtime.shutdown()
        throw error
    }
}

/// The HTTP application over an opened runtime; the runtime is closed when the application stops.
///
/// - Parameter onGatewayRunning: told the address the gateway's own listener (`KEYHAVEN_GATEWAY_ADDRESS`) is bound
///   to, once it takes connections.
/// - Throws: `KeyhavenError.configuration` if the web interface's files cannot be loaded.
public func buildApplication(
    _ runtime: KeyhavenRuntime, onGatewayRunning: @escaping @Sendable (SocketAddress) async -> Void = { _ in }
) async throws -> some ApplicationProtocol {
    let configuration = runtime.configuration
    let router = try await buildRouter(runtime)
    // Services stop in reverse order: the checkpoint's last write and the last backup come before the runtime
    // closes.
    var services: [any Service] = [
        RuntimeService(runtime: runtime),
        AuditCheckpointService(
            audit: runtime.audit, interval: configuration.auditCheckpointInterval, logger: runtime.logger),
    ]
    // After the server has stopped (services stop in reverse order), the queued usage is written.
    services.append(runtime.usageRecorder)
    services.append(PriceRefresher(prices: runtime.gateway.prices, logger: runtime.logger))
    if let settings = configuration.scheduledBackups {
        services.append(
            ScheduledBackupService(
                runtime: runtime, settings: settings, metrics: BackupMetrics(registry: runtime.metrics.registry)))
    }
    if configuration.runVerificationWorker {
        services.append(VerificationWorker(runner: runtime.verifier))
        services.append(
            RotationEngine(
                store: runtime.rotations, context: runtime.verifier.context, logger: runtime.logger,
                interval: configuration.rotationInterval))
    }
    if let address = configuration.metricsAddress {
        services.append(metricsServer(runtime, address: address))
    }
    // Last of the services, so first after the main server to stop: before the usage recorder's drain.
    if let address = configuration.gatewayAddress {
        services.append(
            GatewayListenerService(
                listener: gatewayListener(runtime), address: address, logger: runtime.logger,
                onRunning: onGatewayRunning))
    }
    return Application(
        router: router,
        server: .http1(configuration: deadlined(configuration), onEventLoop: configuration.requestsOnEventLoop),
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
        services: services,
        logger: runtime.logger
    )
}

/// HTTP/1.1 connections that keep the configured deadlines for a request's head and body (``ConnectionDeadlines``).
func deadlined(_ configuration: KeyhavenConfiguration) -> HTTP1Channel.Configuration {
    .init(additionalChannelHandlers: [
        ConnectionDeadlines(head: configuration.headDeadline, body: configuration.bodyDeadline)
    ])
}

extension KeyhavenConfiguration {
    /// ``requestHeadTimeout`` as the connections' deadline.
    var headDeadline: TimeAmount { .seconds(requestHeadTimeout.components.seconds) }
    /// ``requestBodyTimeout`` as the connections' deadline.
    var bodyDeadline: TimeAmount { .seconds(requestBodyTimeout.components.seconds) }
}

/// `GET /metrics` over the runtime's metrics, behind the configured token if there is one.
func metricsEndpoint(_ runtime: KeyhavenRuntime) -> MetricsEndpoint {
    MetricsEndpoint(token: runtime.configuration.metricsToken) { runtime.metrics.render(database: runtime.database) }
}

/// The second server of `KEYHAVEN_METRICS_ADDRESS`: `/metrics` alone, started and stopped with the main one, under
/// the same connection deadlines.
func metricsServer(_ runtime: KeyhavenRuntime, address: KeyhavenConfiguration.ListenAddress) -> some Service {
    let configuration = runtime.configuration
    let router = Router()
    router.add(middleware: SecurityHeadersMiddleware(strictTransportSecurity: false))
    metricsEndpoint(runtime).addRoute(to: router)
    return Application(
        router: router, server: .http1(configuration: deadlined(configuration)),
        configuration: .init(address: .hostname(address.host, port: address.port), serverName: nil),
        logger: runtime.logger)
}

/// Every route of the server over an opened runtime, with its middleware (the contract tests list its routes).
///
/// - Throws: `KeyhavenError.configuration` if the web interface's files cannot be loaded.
public func buildRouter(_ runtime: KeyhavenRuntime) async throws -> Router<AppRequestContext> {
    let configuration = runtime.configuration
    let renderer = try await PageRenderer()
    let cookie = SessionCookie(secure: configuration.isHTTPS)
    let router = Router(context: AppRequestContext.self)
    router.add(middleware: SecurityHeadersMiddleware(strictTransportSecurity: configuration.isHTTPS))
    router.add(middleware: RequestLogMiddleware())
    router.add(
        middleware: RequestMetricsMiddleware {
            runtime.metrics.recordRequest(method: $0, route: $1, status: $2, duration: $3)
        })
    router.add(
        middleware: ErrorMiddleware(
            pages: ErrorPages(
                renderer: renderer, sessions: runtime.sessions, organizations: runtime.organizationService,
                cookie: cookie)))
    let routes = MethodNotAllowedMiddleware<AppRequestContext>.Routes()
    router.add(middleware: MethodNotAllowedMiddleware(routes: routes))
    HealthController(checks: [
        // A write, not only a query: a database that answers but cannot store (a full disk, a read-only file) is
        // not ready, since every credential read writes its audit event.
        ReadinessCheck(name: "database", atMostEvery: .seconds(1)) {
            (try? await runtime.database.checkWritable()) != nil
        },
        ReadinessCheck(name: "keyring") { !runtime.keyring.ids.isEmpty },
    ]).addRoutes(to: router)

    var jwt: ExternalJWTVerifier?
    if let settings = configuration.jwt {
        jwt = await ExternalJWTVerifier(secret: settings.secret, issuer: settings.issuer, audience: settings.audience)
    }
    let api = router.group("api")
    api.add(middleware: ClientAddressMiddleware(trustedProxies: configuration.trustedProxies))
    api.add(
        middleware: AuthenticationMiddleware(
            sessions: runtime.sessions, tokens: runtime.tokens, users: runtime.users, jwt: jwt, cookieName: cookie.name)
    )
    AuthController(accounts: runtime.accounts, cookie: cookie).addRoutes(
        to: api.group("auth"), userGroup: api.group("auth", context: UserContext.self))
    TokenController(accounts: runtime.accounts).addRoutes(to: api.group("tokens", context: UserContext.self))
    let access = runtime.access
    let usage = runtime.usageService
    IntegrationController(service: runtime.integrationService, credentials: runtime.credentialAccess)
        .addRoutes(to: api.group("integrations", context: UserContext.self), api: api)
    OrganizationController(service: runtime.organizationService)
        .addRoutes(
            to: api.group("orgs", context: UserContext.self),
            invitations: api.group("invitations", context: UserContext.self))
    let audit = AuditService(audit: runtime.audit, access: access)
    AuditController(service: audit).addRoutes(to: api.group("audit", context: UserContext.self))
    // `/metrics` on the public port only behind its token; with a separate address it is served there instead.
    if configuration.metricsAddress == nil, configuration.metricsToken != nil {
        metricsEndpoint(runtime).addRoute(to: router)
    }
    WebPages(
        services: WebPages.Services(
            accounts: runtime.accounts, sessions: runtime.sessions, integrations: runtime.integrationService,
            organizations: runtime.organizationService, usage: usage, audit: audit),
        renderer: renderer, cookie: cookie, trustedProxies: configuration.trustedProxies,
        publicURL: configuration.publicURL
    ).addRoutes(to: router)
    UsageController(service: usage)
        .addRoutes(to: api.group("usage", context: UserContext.self), api: api)
    LimitsController(service: usage)
        .addRoutes(
            integrations: api.group("integrations", context: UserContext.self),
            workspaces: api.group("limits", context: UserContext.self))
    GatewayController(exchange: runtime.gatewayExchange).addRoutes(to: router)
    RoutesController(service: usage)
        .addRoutes(to: api.group("routes", context: UserContext.self))
    PricesController(service: usage)
        .addRoutes(to: api.group("orgs", context: UserContext.self))
    CatalogController().addRoutes(to: api.group("catalog", context: UserContext.self))
    TemplatesController(
        service: TemplateService(
            templates: SQLTemplateStore(database: runtime.database, audit: runtime.audit), access: access)
    ).addRoutes(to: api.group("templates", context: UserContext.self))
    OpenAPIDocument.addRoute(to: router)
    routes.load(router.routes)
    return router
}

/// Keeps the runtime open while the server runs and closes it after the server has stopped (services shut down
/// in reverse order, and the server is the last one started).
struct RuntimeService: Service {
    let runtime: KeyhavenRuntime

    func run() async throws {
        try? await gracefulShutdown()
        await runtime.shutdown()
    }
}

/// Gives the memory freed at start back to the system. Reading the price table (3.4 MB of JSON) builds tens of
/// megabytes of short-lived objects; glibc's allocator keeps the pages they used, so without this the server's
/// resident size stays about 25 MB above what it holds.
func releaseFreedMemory() {
    #if canImport(Glibc)
        // `malloc_trim` is glibc's own; Swift's Glibc module does not declare it.
        typealias Trim = @convention(c) (Int) -> Int32
        if let symbol = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim") {
            _ = unsafeBitCast(symbol, to: Trim.self)(0)
        }
    #endif
}
