import Foundation

/// One hostile value, as the raw JSON text that goes where a field's value goes.
public struct HostileValue: Sendable, CustomStringConvertible {
    /// What it is, for failure messages.
    public let label: String
    /// Raw JSON: a string literal (possibly with an invalid escape), a number, an object…
    public let json: String
    /// The value as a Swift string, when it is one (invalid surrogates and non-strings are not).
    public let string: String?

    public var description: String { "\(label): \(json.prefix(60))" }
}

/// Generated hostile inputs for a field whose valid value is known: line breaks and NUL at every position, Unicode
/// digits and look-alike letters, right-to-left marks, whitespace only, 10,000 characters, invalid surrogates,
/// and numbers, objects and arrays where a string belongs.
public enum HostileValues {
    /// The hostile values around `valid`; positions are sampled evenly when `valid` is longer than
    /// `maximumPositions`.
    public static func around(_ valid: String, maximumPositions: Int = 24) -> [HostileValue] {
        var values: [HostileValue] = []
        func add(_ label: String, _ text: String) {
            values.append(HostileValue(label: label, json: literal(text), string: text))
        }
        let characters = Array(valid)
        let step = max(1, characters.count / maximumPositions)
        var positions = Array(stride(from: 0, through: characters.count, by: step))
        if positions.last != characters.count { positions.append(characters.count) }
        for position in positions {
            for (name, mark) in [("LF", "\n"), ("CR", "\r"), ("NUL", "\u{0000}")] {
                var copy = characters
                copy.insert(contentsOf: mark, at: position)
                add("\(name) at \(position)", String(copy))
            }
        }
        add("CRLF at end", valid + "\r\n")
        // Digits of other scripts and full-width forms in place of ASCII digits.
        for (name, digit) in [("Arabic-Indic", "\u{0663}"), ("full-width", "\u{FF13}"), ("Devanagari", "\u{0969}")] {
            let replaced = String(characters.map { $0.isASCII && $0.isNumber ? Character(digit) : $0 })
            add("\(name) digits", replaced == valid ? valid + digit : replaced)
        }
        // Look-alike letters: Cyrillic а, о, е and Greek Α in place of the Latin ones.
        for (latin, lookalike) in [("a", "\u{0430}"), ("o", "\u{043E}"), ("e", "\u{0435}"), ("A", "\u{0391}")] {
            if let index = characters.firstIndex(of: Character(latin)) {
                var copy = characters
                copy[index] = Character(lookalike)
                add("confusable \(latin)", String(copy))
            }
        }
        add("RLM first", "\u{200F}" + valid)
        add("RLO last", valid + "\u{202E}")
        add(
            "LRM inside",
            String(characters.prefix(characters.count / 2)) + "\u{200E}"
                + String(characters.dropFirst(characters.count / 2)))
        add("zero-width space", valid + "\u{200B}")
        for (name, blank) in [
            ("empty", ""), ("spaces", "   "), ("tab", "\t"), ("no-break space", "\u{00A0}"), ("em space", "\u{2003}"),
            ("ideographic space", "\u{3000}"), ("line separator", "\u{2028}"),
        ] {
            add(name, blank)
        }
        add("10,000 characters", String(repeating: "a", count: 10_000))
        add("valid then 10,000 characters", valid + String(repeating: "7", count: 10_000))
        add("private use", valid + "\u{E000}")
        // Not representable as Swift strings: sent as raw JSON escapes.
        for raw in [#""\ud800""#, #""abc\udc00""#, #""\udc00\ud800""#, "\"" + #"\ud83d"# + valid + "\""] {
            values.append(HostileValue(label: "invalid surrogate", json: raw, string: nil))
        }
        for raw in ["0", "-1", "1.5e300", "true", "false", "null", "{}", "[]", #"{"a":"b"}"#, #"["x"]"#] {
            values.append(HostileValue(label: "non-string \(raw)", json: raw, string: nil))
        }
        return values
    }

    /// `text` as a JSON string literal.
    public static func literal(_ text: String) -> String {
        let data =
            (try? JSONSerialization.data(withJSONObject: text, options: [.fragmentsAllowed])) ?? Data("\"\"".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
