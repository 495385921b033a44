import Foundation

/// Unguessable tokens: session cookies, CSRF and form tokens, API tokens, invitations.
public enum RandomToken {
    /// `prefix` + 43 characters of base64url without padding: 256 bits from the system's CSPRNG
    /// (`SystemRandomNumberGenerator`: `getrandom` on Linux, `arc4random_buf` on Darwin).
    public static func make(prefix: String = "") -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return prefix
            + Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
