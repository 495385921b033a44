import Foundation
import KeyhavenCore
import KeyhavenTestSupport
import Testing

@Suite("JSON text")
struct JSONTextTests {
    /// Audit events stored by earlier versions were hashed over `JSONEncoder`'s output: the direct writer must
    /// produce the same bytes, or those chains would no longer verify.
    @Test("the direct writer produces byte for byte what JSONEncoder with sorted keys produces")
    func matchesEncoder() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func encoded(_ value: JSONValue) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }

        let fixed: [JSONValue] = [
            [
                "b": """
                quote \" backslash \\ slash / newline \n tab \t \
                bell \u{07} NUL \u{00} DEL \u{7F} é 😀 \u{2028}
                """,
                "a": [
                    .number(1), .number(-2.5), .number(1e20), .number(0.1), .bool(true), .null, ["z": "y", "x": [:]],
                ],
                "count": .number(42),
            ],
            // Key order is by UTF-8 bytes: upper case, `_`, lower case; digits by character; decomposed accents.
            .object(
                Dictionary(
                    uniqueKeysWithValues: [
                        "credential_version", "credentials", "a10", "a9", "B", "_x", "aB", "a_b", "e\u{301}x", "\u{e9}",
                        "\u{FF01}", "\u{1F600}",
                    ].enumerated().map { ($1, JSONValue.number(Double($0))) })),
            .array([
                .number(-0.0), .number(0), .number(1e15), .number(999_999_999_999_999), .number(9_007_199_254_740_992),
                .number(1e16), .number(1.5e-7), .number(-3), .number(.pi), .number(1e300),
            ]),
            .string(String(decoding: (0..<0x80).map { UInt8($0) }, as: UTF8.self)),
        ]
        for value in fixed { #expect(value.jsonText == (try encoded(value))) }

        // A deterministic random corpus of nested values with awkward keys and strings.
        var generator = SplitMix64(seed: 20_261_204)
        let pieces = [
            "a", "A", "z", "_", "0", "9", "10", "é", "e\u{301}", "\u{00}", "\u{1F}", "\"", "\\", "/", "\n",
            "\u{7F}", "\u{FEFF}", "😀", "\u{FF01}", " ", "key", "Key",
        ]
        func text(_ generator: inout SplitMix64) -> String {
            (0..<Int(generator.next() % 6)).map { _ in pieces[Int(generator.next() % UInt64(pieces.count))] }.joined()
        }
        func value(_ depth: Int, _ generator: inout SplitMix64) -> JSONValue {
            switch generator.next() % (depth > 3 ? 4 : 6) {
            case 0: return .null
            case 1: return .bool(generator.next() % 2 == 0)
            case 2:
                let numbers: [Double] = [0, 1, -1, 42, 1e14, -7e14, 0.5, 1e-9, 123.456]
                return .number(numbers[Int(generator.next() % UInt64(numbers.count))])
            case 3: return .string(text(&generator))
            case 4: return .array((0..<Int(generator.next() % 4)).map { _ in value(depth + 1, &generator) })
            default:
                var members: [String: JSONValue] = [:]
                for _ in 0..<Int(generator.next() % 6) { members[text(&generator)] = value(depth + 1, &generator) }
                return .object(members)
            }
        }
        for _ in 0..<2_000 {
            let sample = JSONValue.object(["v": value(0, &generator), text(&generator): value(1, &generator)])
            #expect(sample.jsonText == (try encoded(sample)))
        }
    }
}

@Suite("Dates and ids as text")
struct WireTextTests {
    @Test("timestamps read exactly as ISO8601FormatStyle with fractional seconds writes them")
    func timestamps() {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        var generator = SplitMix64(seed: 7)
        var samples: [Double] = [
            0, 1.0005, 1.9996, -1.5, -0.0001, 951_782_400, 253_402_300_799.999, -62_135_596_800, -2_208_988_800,
        ]
        for _ in 0..<20_000 {
            samples.append(
                Double(generator.next() % 9_000_000_000) - 2_500_000_000 + Double(generator.next() % 1_000_000) / 1e6)
        }
        for seconds in samples {
            let date = Date(timeIntervalSince1970: seconds)
            #expect(date.timestampText == date.formatted(style), "\(seconds)")
        }
    }

    @Test("ids parse as UUID(uuidString:) parses them, and anything else is refused")
    func ids() {
        var generator = SplitMix64(seed: 11)
        for _ in 0..<2_000 {
            let id = UUID()
            #expect(UUID(text: id.uuidString) == id)
            #expect(UUID(text: id.uuidString.lowercased()) == id)
        }
        let valid = "E621E1F8-C36C-495A-93FC-0C247A3E6E5F"
        var hostile = [
            "", "x", valid + "0", String(valid.dropLast()), valid.replacingOccurrences(of: "-", with: "_"),
            "E621E1F8C36C495A93FC0C247A3E6E5F0000", "{E621E1F8-C36C-495A-93FC-0C247A3E6E5F}",
            "E621E1F8-C36C-495A-93FC-0C247A3E6E5G", "É621E1F8-C36C-495A-93FC-0C247A3E6E5F",
            "E621E1F8-C36C-495A-93FC-0C247A3E6E5\u{0}",
        ]
        let alphabet = Array("0123456789abcdefABCDEFgxyz-_ é\u{0}")
        for _ in 0..<5_000 {
            hostile.append(
                String(
                    (0..<Int(generator.next() % 40)).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))]
                    }))
        }
        for text in hostile { #expect(UUID(text: text) == UUID(uuidString: text), "\(text.debugDescription)") }
    }

    @Test("ids print as uuidString prints them: uppercase for SQLite, lowercase for the API")
    func idTexts() {
        var generator = SplitMix64(seed: 12)
        var ids = [UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))]
        ids.append(UUID(uuid: (255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255)))
        for _ in 0..<5_000 { ids.append(UUID()) }
        for _ in 0..<1_000 {
            let (a, b) = (generator.next(), generator.next())
            ids.append(withUnsafeBytes(of: (a, b)) { UUID(uuid: $0.load(as: uuid_t.self)) })
        }
        for id in ids {
            #expect(id.uppercasedText == id.uuidString)
            #expect(id.lowercasedText == id.uuidString.lowercased())
        }
    }
}
