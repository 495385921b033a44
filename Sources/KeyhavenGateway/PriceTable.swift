import Foundation
import KeyhavenCore
import Synchronization

/// A model's prices in pico-dollars per token (= micro-dollars per million tokens), exact integers, so the cost
/// of an event is computed without floating-point drift.
public struct ModelPrice: Sendable, Equatable, Codable {
    /// Uncached input.
    public var input: Int64
    /// Output (and reasoning, unless ``reasoning`` is set).
    public var output: Int64
    /// Input read from the prompt cache; nil means priced as input.
    public var cachedInput: Int64?
    /// Input written to the prompt cache; nil means priced as input.
    public var cacheWrite: Int64?
    /// Reasoning output; nil means priced as output.
    public var reasoning: Int64?

    /// Creates a price.
    public init(
        input: Int64, output: Int64, cachedInput: Int64? = nil, cacheWrite: Int64? = nil, reasoning: Int64? = nil
    ) {
        self.input = input
        self.output = output
        self.cachedInput = cachedInput
        self.cacheWrite = cacheWrite
        self.reasoning = reasoning
    }

    /// The cost of `usage` in micro-dollars, rounded half up, exact for every input: products and their sum are
    /// taken in 128 bits, and a cost beyond `Int64` (only absurd numbers get there) is its largest value.
    public func cost(of usage: TokenUsage) -> Int64 {
        let cached = max(0, usage.cachedInputTokens)
        let written = max(0, usage.cacheWriteTokens)
        let plainInput = max(0, Saturating.subtract(Saturating.subtract(usage.inputTokens, cached), written))
        let reasoningTokens = max(0, usage.reasoningTokens)
        let plainOutput = max(0, Saturating.subtract(usage.outputTokens, reasoningTokens))
        let parts: [(Int64, Int64)] = [
            (plainInput, input), (cached, cachedInput ?? input), (written, cacheWrite ?? input),
            (plainOutput, output), (reasoningTokens, reasoning ?? output),
        ]
        // Each product is below 2^126 and the running sum is held under `ceiling` (about 2^83), so nothing here
        // can leave Int128; a sum at the ceiling already rounds to more than Int64 holds.
        let ceiling = Int128(Int64.max) * 1_000_000
        var pico: Int128 = 0
        for (tokens, price) in parts {
            pico = min(ceiling, pico + Int128(tokens) * Int128(max(0, price)))
        }
        return Saturating.clamp((pico + 500_000) / 1_000_000)
    }
}

/// The model price table (SPEC §13): LiteLLM's `model_prices_and_context_window.json`, indexed once by provider
/// and model name.
///
/// Lookups accept the names providers answer with: a dated OpenAI name (`gpt-4o-2024-08-06`) falls back to its
/// undated entry when the table has no entry of its own, an Anthropic `-20250929` suffix likewise, Gemini's
/// `models/` prefix is dropped, and the table's provider-prefixed keys (`gemini/gemini-2.5-flash`) are found by
/// the bare name.
public struct PriceTable: Sendable {
    /// Prices by provider, then by model name as the provider spells it.
    let prices: [IntegrationType: [String: ModelPrice]]

    /// How many models of the gateway's providers have prices.
    public var count: Int { prices.values.reduce(0) { $0 + $1.count } }

    /// The catalog's providers by the names the table gives them (an entry's `prices`).
    static func providerNames() -> [String: [IntegrationType]] {
        var names: [String: [IntegrationType]] = [:]
        for entry in ProviderCatalog.current.providers where entry.gateway != nil {
            for name in entry.prices { names[name, default: []].append(entry.type) }
        }
        return names
    }

    /// An empty table: every model is unpriced.
    public static let empty = PriceTable(prices: [:])

    init(prices: [IntegrationType: [String: ModelPrice]]) {
        self.prices = prices
    }

    /// Why a table file is refused.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Parses a table in LiteLLM's format; entries of other providers, and fields Keyhaven does not price, are
    /// ignored.
    ///
    /// - Throws: ``Invalid`` if the data is not a JSON object of model entries, if a price of a gateway provider's
    ///   model is not a non-negative number below one dollar per token, or if no gateway provider's model has a
    ///   price (the file is probably not a price table).
    public init(json data: Data) throws {
        guard let object = try? JSONSerialization.jsonObject(with: data), let entries = object as? [String: Any] else {
            throw Invalid(description: "The price table is not a JSON object of models.")
        }
        var prices: [IntegrationType: [String: ModelPrice]] = [:]
        let providerNames = Self.providerNames()
        for (key, value) in entries {
            guard let entry = value as? [String: Any], let providerName = entry["litellm_provider"] as? String,
                let providers = providerNames[providerName]
            else { continue }
            func price(_ field: String) throws -> Int64? {
                guard let raw = entry[field] else { return nil }
                guard let number = raw as? NSNumber, number.doubleValue.isFinite,
                    (0..<1).contains(number.doubleValue)
                else {
                    throw Invalid(description: "The price \(field) of \(key) is not a number of dollars per token.")
                }
                return Int64((number.doubleValue * 1e12).rounded())
            }
            guard let input = try price("input_cost_per_token") else { continue }
            let model = Self.bareName(key, provider: providerName)
            let modelPrice = ModelPrice(
                input: input, output: try price("output_cost_per_token") ?? 0,
                cachedInput: try price("cache_read_input_token_cost"),
                cacheWrite: try price("cache_creation_input_token_cost"),
                reasoning: try price("output_cost_per_reasoning_token"))
            for provider in providers { prices[provider, default: [:]][model] = modelPrice }
        }
        guard !prices.isEmpty else {
            throw Invalid(description: "The price table has no model of a gateway provider with a price.")
        }
        self.prices = prices
    }

    /// The table shipped with Keyhaven, read once per process.
    ///
    /// - Throws: ``Invalid`` if the bundled file is missing or unreadable.
    public static func bundled() throws -> PriceTable { try shipped.get() }

    private static let shipped = Result { try readBundled() }

    private static func readBundled() throws -> PriceTable {
        let url =
            Bundle.module.url(
                forResource: "model_prices_and_context_window", withExtension: "json", subdirectory: "Resources")
            ?? Bundle.module.url(forResource: "model_prices_and_context_window", withExtension: "json")
        guard let url, let data = try? Data(contentsOf: url) else {
            throw Invalid(description: "The bundled price table is missing.")
        }
        return try PriceTable(json: data)
    }

    /// The price of `model` at `provider`, or nil if the table does not have it.
    public func price(_ provider: IntegrationType, model: String) -> ModelPrice? {
        guard let models = prices[provider] else { return nil }
        var name = model.lowercased()
        if name.hasPrefix("models/") { name.removeFirst("models/".count) }
        if let found = models[name] { return found }
        if let undated = Self.undated(name), let found = models[undated] { return found }
        return nil
    }

    /// The table's key without a `provider/` prefix.
    static func bareName(_ key: String, provider: String) -> String {
        let lowered = key.lowercased()
        let prefix = provider + "/"
        return lowered.hasPrefix(prefix) ? String(lowered.dropFirst(prefix.count)) : lowered
    }

    /// `gpt-4o-2024-08-06` → `gpt-4o`, `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`, `gpt-4-0613` →
    /// `gpt-4`; nil when the name carries no date.
    static func undated(_ name: String) -> String? {
        let parts = name.split(separator: "-", omittingEmptySubsequences: false)
        func digits(_ part: Substring, _ count: Int) -> Bool { part.count == count && part.allSatisfy(\.isASCIIDigit) }
        if parts.count > 3, digits(parts[parts.count - 3], 4), digits(parts[parts.count - 2], 2),
            digits(parts[parts.count - 1], 2)
        {
            return parts.dropLast(3).joined(separator: "-")
        }
        if parts.count > 1, let last = parts.last, digits(last, 8) || digits(last, 4) {
            return parts.dropLast().joined(separator: "-")
        }
        return nil
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

/// The table in use and each workspace's negotiated prices. The table is the operator's imported one when there is
/// one (``refresh()`` picks up a new import), else the bundled one.
public final class Prices: Sendable {
    private struct Current {
        var table: PriceTable
        /// The SHA-256 of the imported table in use; nil for the bundled one.
        var hash: String?
    }

    private struct Negotiated {
        var prices: [String: ModelPrice]
        var at: ContinuousClock.Instant
    }

    private let current: Mutex<Current>
    private let negotiated = Mutex<[UUID: Negotiated]>([:])
    let store: (any PriceStore)?
    /// How long an instance uses a workspace's negotiated prices before reading them again.
    static let negotiatedLifetime: Duration = .seconds(10)

    /// Starts with `table`; `store` holds the imported table and the negotiated prices.
    public init(_ table: PriceTable, store: (any PriceStore)? = nil) {
        current = Mutex(Current(table: table, hash: nil))
        self.store = store
    }

    /// The table in use.
    public var table: PriceTable { current.withLock { $0.table } }

    /// Loads the imported table if it changed since the last call; returns false if it could not be read or does
    /// not parse (the table in use stays).
    @discardableResult
    public func refresh() async -> Bool {
        guard let store else { return true }
        guard let hash = try? await store.importedTableHash() else { return true }
        if current.withLock({ $0.hash }) == hash { return true }
        guard let (body, loadedHash) = try? await store.importedTable(), let table = try? PriceTable(json: body) else {
            return false
        }
        current.withLock { $0 = Current(table: table, hash: loadedHash) }
        return true
    }

    /// A workspace's negotiated prices by lowercased model, read at most every ``negotiatedLifetime``; none when
    /// they cannot be read.
    public func negotiatedPrices(for ownerID: UUID) async -> [String: ModelPrice] {
        let now = ContinuousClock.now
        if let cached = negotiated.withLock({ $0[ownerID] }), now - cached.at < Self.negotiatedLifetime {
            return cached.prices
        }
        guard let store, let overrides = try? await store.overrides(ownerID: ownerID) else { return [:] }
        var prices: [String: ModelPrice] = [:]
        for price in overrides {
            prices[price.model.lowercased()] = ModelPrice(
                input: price.inputMicrosPerMillion, output: price.outputMicrosPerMillion,
                cachedInput: price.cachedInputMicrosPerMillion)
        }
        negotiated.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[ownerID] = Negotiated(prices: prices, at: now)
        }
        return prices
    }

    /// Forgets what this instance cached of `ownerID`'s negotiated prices (they just changed here).
    public func forget(_ ownerID: UUID) {
        negotiated.withLock { _ = $0.removeValue(forKey: ownerID) }
    }

    /// The cost of `usage` in workspace `ownerID`: its negotiated price for the model if it has one, else the
    /// table's; nil when neither has the model.
    public func cost(_ provider: IntegrationType, model: String?, usage: TokenUsage, ownerID: UUID) async -> Int64? {
        guard let model, !model.isEmpty else { return nil }
        return cost(provider, model: model, usage: usage, overrides: await negotiatedPrices(for: ownerID))
    }

    /// The cost of `usage` in micro-dollars: the override for the model if there is one, else the table's price;
    /// nil when neither has the model.
    public func cost(
        _ provider: IntegrationType, model: String?, usage: TokenUsage, overrides: [String: ModelPrice] = [:]
    ) -> Int64? {
        guard let model, !model.isEmpty else { return nil }
        let price = overrides[model.lowercased()] ?? table.price(provider, model: model)
        return price?.cost(of: usage)
    }
}
