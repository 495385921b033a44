import Foundation

extension UUID {
    /// Parses the 36-character form (`8-4-4-4-12` hex digits, either case) without `UUID(uuidString:)`, which scans
    /// with `sscanf`: ids are parsed from every row and request path.
    public init?(text: String) {
        var parsed: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        let valid = withUnsafeMutableBytes(of: &parsed) { output -> Bool in
            var index = 0
            var high: UInt8?
            var count = 0
            for byte in text.utf8 {
                defer { count += 1 }
                if count == 8 || count == 13 || count == 18 || count == 23 {
                    guard byte == UInt8(ascii: "-") else { return false }
                    continue
                }
                let nibble: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = byte - UInt8(ascii: "A") + 10
                default: return false
                }
                guard index < 16 else { return false }
                if let first = high {
                    output[index] = first << 4 | nibble
                    index += 1
                    high = nil
                } else {
                    high = nibble
                }
            }
            return count == 36 && index == 16
        }
        guard valid else { return nil }
        self.init(uuid: parsed)
    }
}

extension UUID {
    /// The 36-character form in lowercase, as the API writes ids: `uuidString.lowercased()`, built directly.
    /// On Linux `uuidString` formats with `snprintf`, about eight times slower, and every row of a list writes ids.
    public var lowercasedText: String { text(digits: Self.lowercaseDigits) }

    /// The 36-character form in uppercase, exactly `uuidString` (the form SQLite stores), built directly.
    public var uppercasedText: String { text(digits: Self.uppercaseDigits) }

    private static let lowercaseDigits = Array("0123456789abcdef".utf8)
    private static let uppercaseDigits = Array("0123456789ABCDEF".utf8)

    private func text(digits: [UInt8]) -> String {
        withUnsafeBytes(of: uuid) { bytes in
            String(unsafeUninitializedCapacity: 36) { output in
                var position = 0
                for index in 0..<16 {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        output[position] = UInt8(ascii: "-")
                        position += 1
                    }
                    output[position] = digits[Int(bytes[index] >> 4)]
                    output[position + 1] = digits[Int(bytes[index] & 0x0F)]
                    position += 2
                }
                return position
            }
        }
    }
}
