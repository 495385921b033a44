import Foundation
import KeyhavenCore
import Testing

@Suite("JSON parsing without a decoder")
struct JSONParsingTests {
    static let valid = [
        #""sk-proj-abc123""#, #"{}"#, #"[]"#, #" {"a": [1, 2.5, -3e2, 0, -0.0, 1E+2, true, false, null]} "#,
        #"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nMIIE\u0041\/x\n"}"#,
        #""\u00e9\ud83d\ude00 \" \\ \/ \b\f\n\r\t""#, #"{"a":1,"a":2}"#, #"[[[[[]]]]]"#, #""ñandú 🔑""#,
        #"123456789012345678901234567890"#, #"{"nested":{"deeper":{"list":["x",{"y":null}]}}}"#,
    ]
    static let invalid = [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul", "\"abc",
        "\"a\u{01}b\"", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\ud800\\u0041\"", "\"\\udc00\"", "{a:1}",
        "[1 2]", "{\"a\" 1}", "1 2", "1e400", "\"\\", "[\"a\"", "NaN", "Infinity", "1e-400", "[0.5e-330]",
        String(repeating: "[", count: 65) + String(repeating: "]", count: 65),
    ]

    @Test("valid JSON reads as JSONDecoder reads it")
    func matchesDecoder() throws {
        for text in Self.valid {
            let expected = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
            #expect(try JSONValue(parsing: text) == expected, "\(text)")
        }
        // Valid zeros JSONDecoder happens to refuse.
        #expect(try JSONValue(parsing: "[0e-400, -0.0e5, 0.000]") == .array([.number(0), .number(-0.0), .number(0)]))
        let deep = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        #expect(throws: Never.self) { try JSONValue(parsing: deep) }
    }

    @Test("invalid JSON is refused, with an offset and nothing of the input")
    func refusesInvalid() {
        for text in Self.invalid {
            #expect(throws: JSONSyntaxError.self, "\(text.debugDescription)") { try JSONValue(parsing: text) }
        }
        // Bytes that are not UTF-8, inside a string.
        let bytes: [UInt8] = [0x22, 0xFF, 0xFE, 0x22]
        #expect(throws: JSONSyntaxError.self) {
            try bytes.withUnsafeBytes { try JSONValue(parsing: $0) }
        }
    }

    @Test("mutated inputs never stop the process, and whatever JSONDecoder also accepts reads the same")
    func fuzzAgainstDecoder() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array(#"{}[]",:0123456789.-+eEtrufalsn\u"ab ud800dc00"#.utf8) + [0x00, 0x1F, 0xC3, 0xA9, 0xFF]
        var accepted = 0
        for round in 0..<20_000 {
            var bytes = Array(Self.valid[round % Self.valid.count].utf8)
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let position = Int.random(in: 0...bytes.count, using: &generator)
                let byte = alphabet.randomElement(using: &generator) ?? 0
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes.insert(byte, at: position)
                case 1 where position < bytes.count: bytes.remove(at: position)
                default: if position < bytes.count { bytes[position] = byte }
                }
            }
            let parsed = bytes.withUnsafeBytes { try? JSONValue(parsing: $0) }
            let decoded = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))
            if let parsed, let decoded {
                accepted += 1
                #expect(parsed == decoded, "\(String(decoding: bytes, as: UTF8.self).debugDescription)")
            }
        }
        #expect(accepted > 100, "the mutations must leave some valid inputs for the comparison to mean anything")
    }
}
