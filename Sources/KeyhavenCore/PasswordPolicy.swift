import Foundation

/// The password rules of SPEC §5: at least 12 characters, at most 256, and not one of the 10,000 most common
/// passwords (bundled from zxcvbn's frequency lists, MIT licence; see Resources/common-passwords-LICENSE.txt).
public enum PasswordPolicy {
    /// The shortest password accepted.
    public static let minimumLength = 12
    /// The longest password accepted (bcrypt reads at most 72 bytes; longer input only costs time).
    public static let maximumLength = 256

    static let common: Set<String> = {
        guard let url = Bundle.module.url(forResource: "common-passwords-10k", withExtension: "txt"),
            let text = try? String(contentsOf: url, encoding: .utf8)
        else { return [] }
        return Set(text.split(whereSeparator: \.isNewline).map { $0.lowercased() })
    }()

    /// How many common passwords are refused (to check that the list was bundled).
    public static var commonPasswordCount: Int { common.count }

    /// The problem with a password in English (the API's words), or nil if it is acceptable.
    public static func problem(with password: String) -> String? { check(password)?.text }

    /// The problem with a password, with its code, or nil if it is acceptable.
    public static func check(_ password: String) -> FieldProblem? {
        // bcrypt would stop at a NUL, and no one types a control character on purpose.
        if password.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return .controlCharacters
        }
        // Counted in code points, as the API document's minLength and maxLength count them.
        let length = password.unicodeScalars.count
        if length < minimumLength { return .tooShort(minimum: minimumLength) }
        if length > maximumLength { return .tooLong(maximum: maximumLength) }
        if common.contains(password.lowercased()) { return .tooCommon }
        return nil
    }
}
