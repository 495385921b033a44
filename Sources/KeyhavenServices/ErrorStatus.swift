import HTTPTypes
import KeyhavenCore

extension KeyhavenError {
    /// The HTTP status of each domain error (SPEC §6): the one mapping, for the router's error body, the error
    /// pages, and the gateway's own listener and usage counts.
    public var httpStatus: HTTPResponse.Status {
        switch self {
        case .badRequest: .badRequest
        case .unauthenticated, .invalidLogin: .unauthorized
        case .forbidden, .endpointNotMetered: .forbidden
        case .notFound: .notFound
        case .conflict, .integrationDisabled: .conflict
        case .gone: .gone
        case .payloadTooLarge, .tooLargeToMeter: .contentTooLarge
        case .unsupportedMediaType: .unsupportedMediaType
        case .validationFailed: .unprocessableContent
        case .rateLimited, .budgetExceeded: .tooManyRequests
        case .providerUnreachable: .badGateway
        // A secret that does not open is the server's problem, not the caller's; the details are in the log.
        case .decryptionFailed, .internalError, .configuration: .internalServerError
        case .unavailable, .keyring: .serviceUnavailable
        }
    }
}
