import Foundation
import KeyhavenCore
import KeyhavenWeb
import Mustache

// The values the pages' views share. Every text in them is in the reader's language, or is data (a name, an id, a
// provider's code); nothing optional is ever printed as such: an absent value is nil, which a template skips.

/// Translated problems by form field, as templates read them (`{{#errors.api_key}}…{{/errors.api_key}}`).
struct FieldMessages: Sendable, MustacheParent {
    let messages: [String: String]

    /// No problem.
    static let none = FieldMessages([:])

    init(_ messages: [String: String]) {
        self.messages = messages
    }

    /// The problems in the reader's language.
    init(_ problems: [String: FieldProblem], texts: Texts) {
        self.messages = problems.mapValues(texts.problem)
    }

    var isEmpty: Bool { messages.isEmpty }

    func child(named name: String) -> Any? { messages[name] }
}

/// Values a form shows again, by field; never a secret.
struct FormValues: Sendable, MustacheParent {
    let values: [String: String]

    /// Nothing to show again.
    static let none = FormValues([:])

    init(_ values: [String: String]) {
        self.values = values
    }

    func child(named name: String) -> Any? { values[name] }
}

/// A message at the top of a page about what was just done (`?done=…`).
struct Notice: Sendable {
    let text: String
}

/// A time as a page shows it: in words, with the exact time for `<time datetime>` when there is one.
struct TimeView: Sendable {
    let text: String
    let iso: String?

    /// `date` in words, or "never".
    init(_ date: Date?, texts: Texts) {
        text = date.map { texts.relative($0) } ?? texts["never"]
        iso = date.map(IntegrationPages.iso)
    }
}

/// A text Keyhaven did not write and cannot translate (what a provider said): shown as it is on an English page,
/// and folded away under a translated summary on any other, so that no English sentence is on the page itself.
struct OriginalText: Sendable {
    let text: String
    /// Whether the page is in the text's language, so it is shown inline.
    let inline: Bool

    /// `text` for a page in `texts`' language; nil when there is nothing to show.
    init?(_ text: String?, texts: Texts) {
        guard let text, !text.isEmpty else { return nil }
        self.text = text
        self.inline = texts.language == .en
    }
}

/// A failure in the reader's language: the sentence, what was found (translated, or the provider's code), and the
/// provider's own words.
struct ProblemView: Sendable {
    let sentence: String
    let detail: String?
    let original: OriginalText?

    /// A sentence alone.
    init(sentence: String) {
        self.sentence = sentence
        detail = nil
        original = nil
    }

    /// A check's problem.
    init(_ problem: VerificationProblem, texts: Texts) {
        sentence = texts.outcome(problem.outcome)
        detail = problem.detail.flatMap { texts.detail($0) ?? texts.providerCode($0) }
        if case .provider(_, let message)? = problem.detail {
            original = OriginalText(message, texts: texts)
        } else {
            original = nil
        }
    }

    /// A stored message without a problem to translate it by (written by something other than a check, or before
    /// problems were kept): on an English page the message itself, elsewhere a general sentence and the message
    /// folded away.
    init(message: String, texts: Texts) {
        let english = texts.language == .en
        sentence = english ? message : texts["problem_recorded"]
        detail = nil
        original = english ? nil : OriginalText(message, texts: texts)
    }

    /// What an integration's status shows as its error; nil unless it is in error with a message.
    static func of(_ integration: Integration, texts: Texts) -> ProblemView? {
        guard integration.status == .error, let message = integration.errorMessage else { return nil }
        if let problem = integration.verificationProblem { return ProblemView(problem, texts: texts) }
        return ProblemView(message: message, texts: texts)
    }
}

/// An option of a `<select>`.
struct Choice: Sendable {
    let value: String
    let label: String
    let selected: Bool
}
