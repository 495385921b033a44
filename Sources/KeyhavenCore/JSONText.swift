import Foundation

extension JSONValue {
    /// The value as compact JSON with object keys sorted by their UTF-8 bytes, written directly (no `Encoder`):
    /// responses are built on every request, and the audit chain hashes it. Byte for byte what Foundation's
    /// `JSONEncoder` writes with `.sortedKeys` and `.withoutEscapingSlashes`, which the chain has always hashed:
    /// strings keep non-ASCII characters as UTF-8 and escape `"`, `\` and the control characters below U+0020
    /// (`\b \t \n \f \r`, the others as `\u00xx`); whole numbers below 10^15 print as integers, any other number as
    /// the encoder prints it; a number that is not finite is `null`.
    public var jsonText: String {
        var output: [UInt8] = []
        output.reserveCapacity(256)
        write(to: &output)
        return String(decoding: output, as: UTF8.self)
    }

    /// Appends the value as ``jsonText`` writes it.
    public func write(to output: inout [UInt8]) {
        switch self {
        case .null: output.append(contentsOf: "null".utf8)
        case .bool(let value): output.append(contentsOf: (value ? "true" : "false").utf8)
        case .number(let value):
            if value.isFinite, value.rounded() == value, abs(value) < 1e15, !(value == 0 && value.sign == .minus) {
                output.append(contentsOf: String(Int64(value)).utf8)
            } else {
                // Fractions, large numbers, -0: rare here, and written exactly as the encoder writes them.
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                output.append(contentsOf: (try? encoder.encode(value)) ?? Data("null".utf8))
            }
        case .string(let value): Self.write(string: value, to: &output)
        case .array(let values):
            output.append(UInt8(ascii: "["))
            for (index, value) in values.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                value.write(to: &output)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let fields):
            output.append(UInt8(ascii: "{"))
            // For ASCII keys (nearly all) String's own order is the bytes' order, and its fastest path.
            let ascii = fields.keys.allSatisfy { $0.utf8.allSatisfy { $0 < 0x80 } }
            let sorted = ascii ? fields.sorted { $0.key < $1.key } : fields.sorted { Self.utf8Precedes($0.key, $1.key) }
            for (index, field) in sorted.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                Self.write(string: field.key, to: &output)
                output.append(UInt8(ascii: ":"))
                field.value.write(to: &output)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// Whether `first`'s UTF-8 bytes sort before `second`'s (String's own `<` compares normalized scalars).
    private static func utf8Precedes(_ first: String, _ second: String) -> Bool {
        var first = first
        var second = second
        return first.withUTF8 { left in
            second.withUTF8 { right in
                let common = min(left.count, right.count)
                if common > 0, let a = left.baseAddress, let b = right.baseAddress {
                    let order = memcmp(a, b, common)
                    if order != 0 { return order < 0 }
                }
                return left.count < right.count
            }
        }
    }

    /// Appends a string as ``jsonText`` writes it (quoted and escaped).
    public static func write(string: String, to output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        var string = string
        string.withUTF8 { bytes in
            // Most strings need no escape: copy them whole.
            if !bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
                output.append(contentsOf: bytes)
            } else {
                escape(bytes, to: &output)
            }
        }
        output.append(UInt8(ascii: "\""))
    }

    private static func escape(_ bytes: UnsafeBufferPointer<UInt8>, to output: inout [UInt8]) {
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""): output.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): output.append(contentsOf: #"\\"#.utf8)
            case 0x0A: output.append(contentsOf: #"\n"#.utf8)
            case 0x0D: output.append(contentsOf: #"\r"#.utf8)
            case 0x09: output.append(contentsOf: #"\t"#.utf8)
            case 0x08: output.append(contentsOf: #"\b"#.utf8)
            case 0x0C: output.append(contentsOf: #"\f"#.utf8)
            case 0x00..<0x20:
                output.append(contentsOf: #"\u00"#.utf8)
                output.append(hexDigits[Int(byte >> 4)])
                output.append(hexDigits[Int(byte & 0x0F)])
            default: output.append(byte)
            }
        }
    }
}

/// Writes one JSON object whose keys the caller gives already in ``JSONValue/jsonText``'s order (sorted by their
/// UTF-8 bytes), for response bodies with fixed keys: the same bytes as building a `JSONValue.object` and writing it,
/// without a dictionary to build, hash and sort for every row.
public struct JSONObjectWriter {
    private var first = true

    /// Starts an object in `output`.
    public init(_ output: inout [UInt8]) {
        output.append(UInt8(ascii: "{"))
    }

    /// Appends one field; keys must come in sorted order.
    public mutating func field(_ key: String, _ value: JSONValue, to output: inout [UInt8]) {
        if !first { output.append(UInt8(ascii: ",")) }
        first = false
        JSONValue.write(string: key, to: &output)
        output.append(UInt8(ascii: ":"))
        value.write(to: &output)
    }

    /// Ends the object.
    public func end(_ output: inout [UInt8]) {
        output.append(UInt8(ascii: "}"))
    }
}
