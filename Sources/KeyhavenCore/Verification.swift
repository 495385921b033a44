import Foundation

/// What a connectivity check concluded (SPEC §7).
public enum VerificationOutcome: String, Sendable, CaseIterable, Error {
    case connected
    case invalidCredentials = "invalid_credentials"
    case expired
    case insufficientPermissions = "insufficient_permissions"
    case rateLimited = "rate_limited"
    case unreachable = "provider_unreachable"
    case unexpectedResponse = "unexpected_response"
    /// The endpoint was refused by the egress policy before any request was made.
    case endpointNotAllowed = "endpoint_not_allowed"

    /// The sentence shown to users, in English (`en`) or Spanish (`es`).
    public func message(language: String = "en") -> String {
        let spanish = language.lowercased().hasPrefix("es")
        switch self {
        case .connected: return spanish ? "Conectado." : "Connected."
        case .invalidCredentials:
            return spanish ? "El proveedor rechazó las credenciales." : "The provider rejected the credentials."
        case .expired: return spanish ? "Las credenciales han caducado." : "The credentials have expired."
        case .insufficientPermissions:
            return spanish
                ? "Las credenciales son válidas pero no tienen los permisos necesarios."
                : "The credentials are valid but lack the required permissions."
        case .rateLimited:
            return spanish
                ? "El proveedor está limitando las solicitudes; inténtalo más tarde."
                : "The provider is rate limiting requests; try again later."
        case .unreachable:
            return spanish ? "No se pudo contactar con el proveedor." : "The provider could not be reached."
        case .unexpectedResponse:
            return spanish ? "El proveedor dio una respuesta inesperada." : "The provider gave an unexpected response."
        case .endpointNotAllowed:
            return spanish
                ? "La política de salida no permite contactar con este destino."
                : "The egress policy does not allow this endpoint."
        }
    }

    /// The integration status an outcome leads to.
    public var status: IntegrationStatus { self == .connected ? .connected : .error }
}

/// What a verification recorded for an integration, as the test route returns it.
public struct VerificationRecord: Sendable {
    public var outcome: VerificationOutcome
    /// The text stored in `error_message` (nil when connected); never holds a credential.
    public var errorMessage: String?
    /// Non-secret facts: an AWS ARN, the number of models.
    public var details: [String: JSONValue]
    public var checkedAt: Date
    public var latency: Duration
    /// What the check found beyond its outcome, with its code (the English of `errorMessage` after the outcome's
    /// sentence).
    public var detail: VerificationDetail?

    /// Creates a record.
    public init(
        outcome: VerificationOutcome, errorMessage: String?, details: [String: JSONValue], checkedAt: Date,
        latency: Duration, detail: VerificationDetail? = nil
    ) {
        self.outcome = outcome
        self.errorMessage = errorMessage
        self.details = details
        self.checkedAt = checkedAt
        self.latency = latency
        self.detail = detail
    }

    /// The failure to keep beside `errorMessage`, so that it can be shown in any language; nil when connected.
    public var problem: VerificationProblem? {
        guard outcome != .connected else { return nil }
        return VerificationProblem(outcome: outcome, detail: detail, message: errorMessage ?? outcome.message())
    }

    /// The non-secret details as they are stored: ``details``, and the ``problem`` under `problem`.
    public var storedDetails: [String: JSONValue] {
        var stored = details
        if let problem { stored[VerificationProblem.storedKey] = problem.json }
        return stored
    }
}

/// Runs a connectivity check now, for the test route.
public protocol IntegrationTester: Sendable {
    /// Checks the owner's integration with its stored credentials, records the result, and audits it.
    ///
    /// - Throws: `KeyhavenError.notFound` if it is not the owner's, `.unavailable` if the database is down.
    func testNow(id: UUID, ownerID: UUID, actor: AuditActor) async throws -> VerificationRecord
}
