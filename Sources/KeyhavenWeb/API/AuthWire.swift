import Foundation
import KeyhavenCore
import KeyhavenServices

// The wire types of /api/auth (SPEC §5).

/// `POST /api/auth/signup`: `{email, password}`.
struct SignupRequest: RequestBody {
    static let knownFields: Set<String>? = ["email", "password"]

    var email: Input<String>?
    var password: Input<String>?

    /// What the account rules need: sign-up counts every attempt against the address's limit before it judges the
    /// input, so the fields stay optional here and the problems travel with them to ``Accounts/signUp``.
    struct Parsed {
        var email: String?
        var password: String?
        var problems: [String: String]
    }

    func parsed(_ errors: FieldErrors) -> Parsed {
        var errors = errors
        let email = TextRule.text(email, "email", required: true, maximumLength: 254, errors: &errors)
        let password = TextRule.raw(password, "password", errors: &errors)
        return Parsed(email: email, password: password, problems: errors.problems)
    }
}

/// `POST /api/auth/login`: `{email, password}`; other members are ignored, as they always were.
struct LoginRequest: RequestBody {
    var email: Input<String>?
    var password: Input<String>?

    /// Credentials to check.
    struct Valid {
        var email: String
        var password: String
    }

    func validated(_ errors: FieldErrors) -> Result<Valid, FieldErrors> {
        var errors = errors
        let email = TextRule.text(email, "email", required: true, maximumLength: 254, errors: &errors)
        let password = TextRule.raw(password, "password", errors: &errors)
        if let password, password.isEmpty || password.utf8.contains(0) {
            errors["password"] = "must be a non-empty string without NUL characters"
        }
        guard errors.isEmpty, let email, let password else { return .failure(errors) }
        return .success(Valid(email: email, password: password))
    }
}

/// `{id, email}`.
struct UserResponse: ResponseBody {
    let user: User

    var json: JSONValue {
        .object(["id": wireID(user.id), "email": user.email.map(JSONValue.string) ?? .null])
    }
}

/// The signup, login and `/api/auth/me` response: the user and the session's CSRF token (null for bearer tokens).
struct SessionResponse: ResponseBody {
    let user: User
    let csrfToken: String?

    var json: JSONValue {
        .object(["user": UserResponse(user: user).json, "csrf_token": csrfToken.map(JSONValue.string) ?? .null])
    }
}
