import Foundation
import KeyhavenCore
import Testing

@Suite("JSON text")
struct JSONTextTests {
    @Test("the direct writer produces what JSONEncoder with sorted keys produces, and parses back to the same value")
    func matchesEncoder() throws {
        let value: JSONValue = [
            "b": "quote \" backslash \\ slash / newline \n tab \t bell \u{07} NUL \u{00} é 😀",
            "a": [.number(1), .number(-2.5), .number(1e20), .number(0.1), .bool(true), .null, ["z": "y", "x": [:]]],
            "count": .number(42),
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let expected = try JSONDecoder().decode(JSONValue.self, from: encoder.encode(value))
        #expect(try JSONDecoder().decode(JSONValue.self, from: Data(value.jsonText.utf8)) == expected)
        #expect(JSONValue.object(["n": .number(3), "s": "x"]).jsonText == #"{"n":3,"s":"x"}"#)
    }
}
