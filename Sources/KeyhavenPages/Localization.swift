import Foundation
import KeyhavenCore
import KeyhavenWeb
import Mustache

/// The languages of the web interface (SPEC §9): Spanish, the seed's, and English.
public enum Language: String, Sendable, CaseIterable {
    case es
    case en

    /// The name of the cookie that remembers a chosen language.
    static let cookieName = "keyhaven_lang"

    /// The language's own name, as the language switch shows it.
    var ownName: String {
        switch self {
        case .es: "Español"
        case .en: "English"
        }
    }

    /// The language for a request: the remembered choice, else the first supported language of
    /// `Accept-Language` by preference, else Spanish.
    static func negotiate(cookie: String?, acceptLanguage: String?) -> Language {
        if let cookie, let chosen = Language(rawValue: cookie) { return chosen }
        guard let header = acceptLanguage?.prefix(512) else { return .es }
        var best: (language: Language, quality: Double)?
        for item in header.split(separator: ",") {
            let parts = item.split(separator: ";")
            let tag = (parts.first ?? "").trimmingCharacters(in: .whitespaces).lowercased()
            let primary = String(tag.split(separator: "-").first ?? "")
            guard let language = Language(rawValue: primary) else { continue }
            var quality = 1.0
            for parameter in parts.dropFirst() {
                let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if pair.count == 2, pair[0] == "q", let value = Double(pair[1]), value.isFinite { quality = value }
            }
            if quality > 0, quality > (best?.quality ?? -1) { best = (language, quality) }
        }
        return best?.language ?? .es
    }
}

/// The interface's texts in every language, read once at start from `Resources/Localization/<language>.json`
/// (one flat object of keys and texts per language; `{name}` marks a value filled in by the code).
struct Localization: Sendable {
    let tables: [Language: [String: String]]

    /// Reads every language's file in `directory`.
    ///
    /// - Throws: `KeyhavenError.configuration` when a file is missing or is not an object of texts.
    init(directory: URL) throws {
        var tables: [Language: [String: String]] = [:]
        for language in Language.allCases {
            let file = directory.appendingPathComponent("\(language.rawValue).json")
            guard let data = try? Data(contentsOf: file),
                let table = try? JSONDecoder().decode([String: String].self, from: data)
            else {
                throw KeyhavenError.configuration("the interface texts (\(file.lastPathComponent)) could not be read")
            }
            tables[language] = table
        }
        self.tables = tables
    }

    /// The bundled texts.
    ///
    /// - Throws: `KeyhavenError.configuration` when they are missing next to the executable or do not read.
    static func bundled() throws -> Localization {
        guard let directory = Bundle.module.url(forResource: "Localization", withExtension: nil) else {
            throw KeyhavenError.configuration("the interface texts (keyhaven_KeyhavenPages.resources) are missing")
        }
        return try Localization(directory: directory)
    }

    /// One language's texts.
    func texts(_ language: Language) -> Texts { Texts(language: language, table: tables[language] ?? [:]) }
}

/// One language's texts, as the pages use them and as templates read them (`{{t.key}}`).
///
/// A key that is missing shows as itself, never as an empty or `nil` text; a test checks that every key used exists
/// in every language.
struct Texts: Sendable, MustacheParent {
    let language: Language
    let table: [String: String]

    /// The text of `key`.
    subscript(_ key: String) -> String { table[key] ?? key }

    /// The text of `key` with each `{name}` replaced by `values[name]`.
    func format(_ key: String, _ values: [String: String]) -> String {
        values.reduce(self[key]) { text, value in text.replacingOccurrences(of: "{\(value.key)}", with: value.value) }
    }

    func child(named name: String) -> Any? { table[name] }

    /// The label of a status, as the seed writes it in Spanish.
    func status(_ status: IntegrationStatus) -> String { self["status_\(status.rawValue)"] }

    /// The name of a role.
    func role(_ role: WorkspaceRole) -> String { self["role_\(role.rawValue)"] }

    /// The name of a provider: the texts' own, else the catalog's in this language, else its id.
    func type(_ type: IntegrationType) -> String {
        if let name = table["type_\(type.rawValue)"] { return name }
        guard let names = type.entry?.names else { return type.rawValue }
        return language == .es ? names.es : names.en
    }

    /// What a provider's credentials are, under its name on the new-integration page.
    func description(_ entry: ProviderEntry) -> String {
        if let own = table["desc_\(entry.id)"] { return own }
        return switch entry.credential.kind {
        case .apiKey: format("desc_api_key_of", ["provider": type(entry.type)])
        case .googleServiceAccount: self["desc_google_cloud"]
        case .awsKeys: self["desc_aws"]
        case .azureServicePrincipal: self["desc_azure"]
        }
    }

    /// What an audit action means, in words; an action without a label shows its code.
    func action(_ action: String) -> String { table["action.\(action)"] ?? action }

    /// A validation problem in this language, from its code. A problem known only by its English sentence shows
    /// as that sentence in English, and as a general one elsewhere.
    func problem(_ problem: FieldProblem) -> String {
        if problem.code == .invalid { return language == .en ? problem.text : self["problem.invalid"] }
        return format("problem.\(problem.code.rawValue)", problem.parameters)
    }

    /// A check's outcome in this language.
    func outcome(_ outcome: VerificationOutcome) -> String { outcome.message(language: language.rawValue) }

    /// What a check found, in this language; nil for the provider's own words, which only ``providerCode(_:)`` and
    /// the original text can show.
    func detail(_ detail: VerificationDetail) -> String? {
        switch detail {
        case .provider: nil
        case .requestNotBuilt(let reason):
            format("detail.request_not_built", ["reason": self["detail.reason.\(reason.rawValue)"]])
        case .azure(let code, let refusal): format("detail.azure.\(refusal.rawValue)", ["code": code])
        default: format("detail.\(detail.code.rawValue)", detail.parameters)
        }
    }

    /// "Provider's code: X" for the provider's own words that carry a code.
    func providerCode(_ detail: VerificationDetail) -> String? {
        guard case .provider(let code?, _) = detail, !code.isEmpty else { return nil }
        return format("detail.provider_code", ["code": code])
    }

    /// "hace 5 minutos" / "5 minutes ago"; a date beyond a month is shown as the day.
    func relative(_ date: Date, now: Date = Date()) -> String {
        let seconds = max(0, now.timeIntervalSince(date))
        func count(_ value: Int, _ unit: String) -> String {
            format("time.\(unit).\(value == 1 ? "one" : "other")", ["count": String(value)])
        }
        switch seconds {
        case ..<45: return self["time.just_now"]
        case ..<5400: return count(max(1, Int((seconds / 60).rounded())), "minutes")
        case ..<129_600: return count(Int((seconds / 3600).rounded()), "hours")
        case ..<2_592_000: return count(Int((seconds / 86400).rounded()), "days")
        default: return date.formatted(Date.ISO8601FormatStyle().year().month().day())
        }
    }
}
