import Foundation

/// The tokens of one or more provider requests, as the provider counted them (SPEC §13).
///
/// Totals include their parts: `inputTokens` counts cached and cache-written input too, `outputTokens` counts
/// reasoning too. Each provider's own way of reporting is normalised to this when it is read.
public struct TokenUsage: Sendable, Equatable, Codable {
    /// Every input token, cached or not.
    public var inputTokens: Int64
    /// Input tokens read from the provider's prompt cache (a part of `inputTokens`).
    public var cachedInputTokens: Int64
    /// Input tokens written to the provider's prompt cache (a part of `inputTokens`; Anthropic).
    public var cacheWriteTokens: Int64
    /// Every output token, reasoning included.
    public var outputTokens: Int64
    /// Output tokens spent on reasoning (a part of `outputTokens`).
    public var reasoningTokens: Int64

    /// Creates a usage value.
    public init(
        inputTokens: Int64 = 0, cachedInputTokens: Int64 = 0, cacheWriteTokens: Int64 = 0, outputTokens: Int64 = 0,
        reasoningTokens: Int64 = 0
    ) {
        self.inputTokens = inputTokens
        self.cachedInputTokens = cachedInputTokens
        self.cacheWriteTokens = cacheWriteTokens
        self.outputTokens = outputTokens
        self.reasoningTokens = reasoningTokens
    }

    /// Input and output together, what tokens-per-minute limits count.
    public var totalTokens: Int64 { Saturating.add(inputTokens, outputTokens) }

    /// Adds `other`'s counts to these.
    public mutating func add(_ other: TokenUsage) {
        inputTokens = Saturating.add(inputTokens, other.inputTokens)
        cachedInputTokens = Saturating.add(cachedInputTokens, other.cachedInputTokens)
        cacheWriteTokens = Saturating.add(cacheWriteTokens, other.cacheWriteTokens)
        outputTokens = Saturating.add(outputTokens, other.outputTokens)
        reasoningTokens = Saturating.add(reasoningTokens, other.reasoningTokens)
    }
}

/// How a usage event reached Keyhaven.
public enum UsageSource: String, Sendable, Codable {
    /// A request Keyhaven forwarded; the numbers are the provider's answer.
    case gateway
    /// A backend that called the provider itself reported it.
    case reported
}

/// One provider request's usage, or several reported together, with its cost (SPEC §13). Append-only.
public struct UsageEvent: Sendable, Equatable {
    public var id: UUID
    /// The workspace the integration belonged to when the request was made.
    public var ownerID: UUID
    public var integrationID: UUID
    public var type: IntegrationType
    /// The model the provider says answered (or the reported one); nil when it is not known.
    public var model: String?
    public var source: UsageSource
    /// The provider's HTTP status, for gateway requests.
    public var status: Int?
    public var requests: Int64
    public var tokens: TokenUsage
    /// Micro-dollars; nil when the model has no price.
    public var costMicros: Int64?
    /// The service token that made or reported the request.
    public var tokenID: UUID?
    /// The reporter's key that makes a report idempotent.
    public var idempotencyKey: String?
    public var occurredAt: Date
    /// Whether the tokens are Keyhaven's estimate rather than the provider's count: the answer ended without its
    /// usage (the caller went away, the provider broke off), so the input was counted from the request.
    public var estimated: Bool

    /// Creates an event.
    public init(
        id: UUID = UUID(), ownerID: UUID, integrationID: UUID, type: IntegrationType, model: String?,
        source: UsageSource, status: Int? = nil, requests: Int64 = 1, tokens: TokenUsage, costMicros: Int64?,
        tokenID: UUID?, idempotencyKey: String? = nil, occurredAt: Date = Date(), estimated: Bool = false
    ) {
        self.id = id
        self.ownerID = ownerID
        self.integrationID = integrationID
        self.type = type
        self.model = model
        self.source = source
        self.status = status
        self.requests = requests
        self.tokens = tokens
        self.costMicros = costMicros
        self.tokenID = tokenID
        self.idempotencyKey = idempotencyKey
        self.occurredAt = occurredAt
        self.estimated = estimated
    }
}

/// The rule for a model name Keyhaven stores, whoever supplied it (a report, a request body, a provider's answer):
/// at most ``maximumBytes`` bytes of UTF-8 and no control characters. PostgreSQL refuses a NUL in text, so one
/// unchecked name would fail the whole batch of usage events it is written with.
public enum ModelName {
    /// The longest name kept, in UTF-8 bytes.
    public static let maximumBytes = 200

    /// Whether `name` may be stored: not empty, at most ``maximumBytes`` bytes, no control character (C0, DEL, C1).
    public static func isValid(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= maximumBytes
            && !name.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }

    /// `name` if it may be stored, nil otherwise (the model is then unknown, and its usage still counts).
    public static func validated(_ name: String?) -> String? {
        guard let name, isValid(name) else { return nil }
        return name
    }
}

/// How usage is grouped in a summary.
public enum UsageGrouping: String, Sendable, CaseIterable {
    case day
    case model
    case integration
}

/// One row of a usage summary: a day, a model or an integration, with its totals.
public struct UsageTotals: Sendable, Equatable {
    /// The day (`2026-12-04`, UTC), the model (empty when unknown) or the integration id.
    public var key: String
    public var requests: Int64
    public var tokens: TokenUsage
    /// Micro-dollars of the priced requests.
    public var costMicros: Int64
    /// Requests whose model had no price (their tokens count, their cost is unknown).
    public var unpricedRequests: Int64

    /// Creates a row.
    public init(key: String, requests: Int64, tokens: TokenUsage, costMicros: Int64, unpricedRequests: Int64) {
        self.key = key
        self.requests = requests
        self.tokens = tokens
        self.costMicros = costMicros
        self.unpricedRequests = unpricedRequests
    }

    /// Nothing yet.
    public static let zero = UsageTotals(key: "", requests: 0, tokens: TokenUsage(), costMicros: 0, unpricedRequests: 0)

    /// An event's contribution to a row: its cost, or its requests as unpriced.
    public init(key: String = "", _ event: UsageEvent) {
        self.init(
            key: key, requests: event.requests, tokens: event.tokens, costMicros: event.costMicros ?? 0,
            unpricedRequests: event.costMicros == nil ? event.requests : 0)
    }

    /// Adds `other`'s totals to these.
    public mutating func add(_ other: UsageTotals) {
        requests = Saturating.add(requests, other.requests)
        tokens.add(other.tokens)
        costMicros = Saturating.add(costMicros, other.costMicros)
        unpricedRequests = Saturating.add(unpricedRequests, other.unpricedRequests)
    }
}

extension [UsageTotals] {
    /// The sum of the rows.
    public var total: UsageTotals {
        var sum = UsageTotals.zero
        for row in self { sum.add(row) }
        return sum
    }
}

/// Which usage a summary covers: a workspace, optionally one integration, days `from` through `to` (UTC).
public struct UsageQuery: Sendable, Equatable {
    public var ownerID: UUID
    public var integrationID: UUID?
    /// The first day, `yyyy-MM-dd`.
    public var from: String
    /// The last day, `yyyy-MM-dd`, included.
    public var to: String
    public var grouping: UsageGrouping

    /// Creates a query.
    public init(ownerID: UUID, integrationID: UUID?, from: String, to: String, grouping: UsageGrouping) {
        self.ownerID = ownerID
        self.integrationID = integrationID
        self.from = from
        self.to = to
        self.grouping = grouping
    }
}

/// The append-only usage events and their daily roll-ups.
public protocol UsageStore: Sendable {
    /// Appends gateway events, and adds them to the daily roll-ups, in one transaction.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached (nothing is written).
    func append(_ events: [UsageEvent]) async throws

    /// Appends one reported event unless an event with its idempotency key exists for the integration, with
    /// `audit` in the same transaction when it is new; returns the stored event and whether it was new.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached (nothing is written).
    func report(_ event: UsageEvent, audit: AuditEntry) async throws -> (UsageEvent, created: Bool)

    /// Checks that the database answers: tells an event the database refuses from a database that is down.
    ///
    /// - Throws: `KeyhavenError.unavailable` if it does not.
    func ping() async throws

    /// Totals per day, model or integration.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func summary(_ query: UsageQuery) async throws -> [UsageTotals]
}

extension Date {
    /// The UTC day this instant falls on, `yyyy-MM-dd`: the key of daily roll-ups.
    public var utcDay: String {
        let parts = Calendar.utc.dateComponents([.year, .month, .day], from: self)
        let (year, month, day) = (parts.year ?? 1970, parts.month ?? 1, parts.day ?? 1)
        return String(format: "%04d-%02d-%02d", year, month, day)
    }
}

extension Calendar {
    /// The Gregorian calendar in UTC.
    public static let utc: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? .gmt
        return calendar
    }()
}

/// An integration's or a workspace's limits on gateway use (SPEC §13); nil means no limit.
public struct UsageLimits: Sendable, Equatable {
    /// Micro-dollars per calendar month (UTC).
    public var monthlyBudgetMicros: Int64?
    public var requestsPerMinute: Int64?
    /// Input and output tokens per minute.
    public var tokensPerMinute: Int64?
    /// Whether the owner lets the gateway forward endpoints whose usage it cannot meter (batches, background
    /// responses, images, audio) although a budget or token limit is set: their cost then escapes the limits.
    public var allowsUnmeteredEndpoints: Bool

    /// Creates limits.
    public init(
        monthlyBudgetMicros: Int64? = nil, requestsPerMinute: Int64? = nil, tokensPerMinute: Int64? = nil,
        allowsUnmeteredEndpoints: Bool = false
    ) {
        self.monthlyBudgetMicros = monthlyBudgetMicros
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.allowsUnmeteredEndpoints = allowsUnmeteredEndpoints
    }

    /// Whether nothing is limited or allowed.
    public var isEmpty: Bool {
        monthlyBudgetMicros == nil && requestsPerMinute == nil && tokensPerMinute == nil && !allowsUnmeteredEndpoints
    }

    /// Whether a limit counts what requests cost (a budget or tokens per minute): only usage the gateway can meter
    /// keeps it true.
    public var countsUsage: Bool { monthlyBudgetMicros != nil || tokensPerMinute != nil }

    /// The share of a budget at which the integration shows a warning and an audit event is written, in percent.
    public static let warningPercent: Int64 = 80
}

/// Limits, the counters that enforce them, and the spending they are checked against. Counters are shared by
/// every instance on PostgreSQL.
public protocol LimitStore: Sendable {
    /// The limits set on each of `subjects` (integration or workspace ids); subjects without limits are absent.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func limits(for subjects: [UUID]) async throws -> [UUID: UsageLimits]

    /// Sets (or, when empty, removes) the limits of an integration or a workspace, audited.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func setLimits(_ limits: UsageLimits, subject: UUID, ownerID: UUID, actor: AuditActor) async throws

    /// Micro-dollars spent in a workspace (or by one of its integrations) since the start of `since`'s day.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func spent(ownerID: UUID, integrationID: UUID?, since: Date) async throws -> Int64

    /// Adds `requests` and `tokens` to `subject`'s counters for the minute `window` and returns the totals.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func count(subject: UUID, window: Int64, requests: Int64, tokens: Int64) async throws -> (
        requests: Int64, tokens: Int64
    )

    /// Records that `subject` passed the warning share of its budget in `month` (`2026-12`); true, and an audit
    /// event, only the first time per month, whichever instance asks.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func warnOnce(subject: UUID, ownerID: UUID, integrationID: UUID?, month: String, spent: Int64, budget: Int64)
        async throws
        -> Bool
}

/// A named fallback route of a workspace (SPEC §13): its integrations in the order they are tried.
public struct GatewayRoute: Sendable, Equatable {
    public var name: String
    public var ownerID: UUID
    public var integrationIDs: [UUID]
    public var updatedAt: Date

    /// Creates a route.
    public init(name: String, ownerID: UUID, integrationIDs: [UUID], updatedAt: Date) {
        self.name = name
        self.ownerID = ownerID
        self.integrationIDs = integrationIDs
        self.updatedAt = updatedAt
    }

    /// Whether `name` can name a route: 1 to 63 lowercase letters, digits, `.`, `_` or `-`, starting with a letter or
    /// digit (it is a path segment of the gateway's URL).
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 63 else { return false }
        func allowed(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        return allowed(first)
            && name.utf8.allSatisfy {
                allowed($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-")
            }
    }

    /// The most integrations one route lists.
    public static let maximumLength = 10
}

/// Fallback routes, by workspace and name.
public protocol RouteStore: Sendable {
    /// The route `name` of workspace `ownerID`.
    ///
    /// - Throws: `KeyhavenError.notFound`, `.unavailable`.
    func route(name: String, ownerID: UUID) async throws -> GatewayRoute

    /// The workspace's routes by name.
    ///
    /// - Throws: `KeyhavenError.unavailable`.
    func routes(ownerID: UUID) async throws -> [GatewayRoute]

    /// Creates or replaces a route, audited.
    ///
    /// - Throws: `KeyhavenError.unavailable`.
    func put(_ route: GatewayRoute, actor: AuditActor) async throws

    /// Deletes a route, audited.
    ///
    /// - Throws: `KeyhavenError.notFound`, `.unavailable`.
    func delete(name: String, ownerID: UUID, actor: AuditActor) async throws
}

/// A workspace's negotiated price for one model, in micro-dollars per million tokens (SPEC §13).
public struct PriceOverride: Sendable, Equatable {
    /// The model as the provider names it, lowercase.
    public var model: String
    public var inputMicrosPerMillion: Int64
    public var outputMicrosPerMillion: Int64
    /// Cached input; nil means priced as input.
    public var cachedInputMicrosPerMillion: Int64?

    /// Creates a price.
    public init(
        model: String, inputMicrosPerMillion: Int64, outputMicrosPerMillion: Int64, cachedInputMicrosPerMillion: Int64?
    ) {
        self.model = model
        self.inputMicrosPerMillion = inputMicrosPerMillion
        self.outputMicrosPerMillion = outputMicrosPerMillion
        self.cachedInputMicrosPerMillion = cachedInputMicrosPerMillion
    }

    /// The most negotiated prices one workspace keeps.
    public static let maximumCount = 200
}

/// The operator's imported price table and the workspaces' negotiated prices.
public protocol PriceStore: Sendable {
    /// The SHA-256 of the imported table, if one was imported (cheap: servers poll it).
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func importedTableHash() async throws -> String?

    /// The imported table's text and its SHA-256, if one was imported.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func importedTable() async throws -> (body: Data, sha256: String)?

    /// Stores a validated table, replacing the previous one, audited; returns its SHA-256.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func importTable(_ body: Data, models: Int, actor: AuditActor) async throws -> String

    /// A workspace's negotiated prices.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func overrides(ownerID: UUID) async throws -> [PriceOverride]

    /// Replaces a workspace's negotiated prices, audited.
    ///
    /// - Throws: `KeyhavenError.unavailable` if the database cannot be reached.
    func setOverrides(_ overrides: [PriceOverride], ownerID: UUID, actor: AuditActor) async throws
}

/// Days as the usage pages and API name them.
public enum UsageDays {
    /// Midnight UTC of `text` (`2026-12-04`), if it is a real day.
    public static func date(_ text: String) -> Date? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.utf8.count == 10, parts.count == 3, let year = Int(parts[0]), let month = Int(parts[1]),
            let day = Int(parts[2]), (1...9999).contains(year)
        else { return nil }
        guard let date = Calendar.utc.date(from: DateComponents(year: year, month: month, day: day)),
            date.utcDay == text
        else { return nil }
        return date
    }
}
