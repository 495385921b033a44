import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A typed client for the Keyhaven HTTP API, for application backends and scripts.
///
/// Every call sends `Authorization: Bearer <token>`: a personal access token (`kh_pat_…`) or an external JWT for
/// the integration calls and the audit trail, a service token (`kh_svc_…`) for ``credentials(for:)``. Failures
/// are thrown as ``KeyhavenClientError``.
///
/// ```swift
/// let vault = KeyhavenClient(baseURL: URL(string: "https://vault.internal")!, token: serviceToken)
/// if case .openAI(let key, let organization, _) = try await vault.credentials(for: id).credentials { … }
/// ```
public struct KeyhavenClient: Sendable {
    /// The server's root URL.
    public let baseURL: URL
    private let token: String
    private let http: HTTPClient
    private let timeout: Duration

    /// Creates a client.
    ///
    /// - Parameters:
    ///   - baseURL: the server's root (`https://vault.internal`); the API's paths are appended to it.
    ///   - token: a personal access token, a service token, or an external JWT.
    ///   - httpClient: the HTTP client to send with; the shared one by default.
    ///   - timeout: the limit for each call, from sending to the last byte of the answer.
    public init(baseURL: URL, token: String, httpClient: HTTPClient = .shared, timeout: Duration = .seconds(30)) {
        self.baseURL = baseURL
        self.token = token
        self.http = httpClient
        self.timeout = timeout
    }

    // MARK: Integrations

    /// One page of the caller's integrations, newest first.
    ///
    /// - Parameters:
    ///   - limit: at most this many (1–200); the server's default, 50, when nil.
    ///   - cursor: the `nextCursor` of the previous page.
    /// - Throws: ``KeyhavenClientError``.
    public func integrations(limit: Int? = nil, cursor: String? = nil) async throws -> IntegrationPage {
        var query: [(String, String)] = []
        if let limit { query.append(("limit", String(limit))) }
        if let cursor { query.append(("cursor", cursor)) }
        return try await send(.GET, ["api", "integrations"], query: query)
    }

    /// One integration.
    ///
    /// - Throws: ``KeyhavenClientError/notFound`` when it does not exist or is another user's.
    public func integration(_ id: UUID) async throws -> Integration {
        try await send(.GET, ["api", "integrations", id.uuidString.lowercased()])
    }

    /// Creates an integration; it starts in status `verifying` while the server checks the credentials.
    ///
    /// - Throws: ``KeyhavenClientError/validation(fields:message:)`` for invalid input,
    ///   ``KeyhavenClientError/conflict(code:message:)`` when the name is taken.
    public func createIntegration(_ new: NewIntegration) async throws -> Integration {
        let wire = new.credentials.wire
        let body: JSON = .object([
            "name": .string(new.name), "type": .string(new.credentials.type.rawValue),
            "credentials": wire.credentials, "config": wire.config,
        ])
        return try await send(.POST, ["api", "integrations"], body: body)
    }

    /// Changes an integration.
    ///
    /// - Throws: ``KeyhavenClientError``; `.validation` also when nothing would change or the credentials are of
    ///   another type.
    public func updateIntegration(_ id: UUID, _ update: IntegrationUpdate) async throws -> Integration {
        var body: [String: JSON] = [:]
        if let name = update.name { body["name"] = .string(name) }
        if let enabled = update.enabled { body["enabled"] = .bool(enabled) }
        if let credentials = update.credentials {
            let wire = credentials.wire
            body["credentials"] = wire.credentials
            body["config"] = wire.config
        }
        return try await send(.PATCH, ["api", "integrations", id.uuidString.lowercased()], body: .object(body))
    }

    /// Deletes an integration and destroys every version of its credentials.
    ///
    /// - Throws: ``KeyhavenClientError``.
    public func deleteIntegration(_ id: UUID) async throws {
        let _: Empty = try await send(.DELETE, ["api", "integrations", id.uuidString.lowercased()])
    }

    /// Checks the stored credentials with the provider now and updates the integration's status.
    ///
    /// - Throws: ``KeyhavenClientError``; `.rateLimited` when the caller started too many checks.
    public func testIntegration(_ id: UUID) async throws -> TestResult {
        try await send(.POST, ["api", "integrations", id.uuidString.lowercased(), "test"])
    }

    // MARK: Audit

    /// One page of the caller's audit events, newest first.
    ///
    /// - Throws: ``KeyhavenClientError``.
    public func auditEvents(integrationID: UUID? = nil, limit: Int? = nil, cursor: String? = nil) async throws
        -> AuditPage
    {
        var query: [(String, String)] = []
        if let integrationID { query.append(("integration_id", integrationID.uuidString.lowercased())) }
        if let limit { query.append(("limit", String(limit))) }
        if let cursor { query.append(("cursor", cursor)) }
        return try await send(.GET, ["api", "audit"], query: query)
    }

    // MARK: Credentials (service tokens)

    /// The decrypted credentials of an integration, typed; needs a service token with `credentials:read`. The
    /// read is audited on the server before the credentials are returned.
    ///
    /// - Throws: ``KeyhavenClientError/forbidden(message:)`` for personal tokens and JWTs,
    ///   ``KeyhavenClientError/conflict(code:message:)`` (`integration_disabled`) for a disabled integration,
    ///   ``KeyhavenClientError/unavailable(message:)`` when the read cannot be audited.
    public func credentials(for id: UUID) async throws -> IntegrationCredentials {
        struct Wire: Decodable {
            var integrationID: UUID
            var type: IntegrationType
            var status: IntegrationStatus
            var credentialVersion: Int
            var credentials: JSON
            var config: JSON?

            enum CodingKeys: String, CodingKey {
                case integrationID = "integration_id"
                case credentialVersion = "credential_version"
                case type, status, credentials, config
            }
        }
        let (status, data, _) = try await exchange(
            .GET, ["api", "integrations", id.uuidString.lowercased(), "credentials"])
        guard let wire = try? Self.decoder.decode(Wire.self, from: data),
            let credentials = Credentials(type: wire.type, credentials: wire.credentials, config: wire.config ?? .null)
        else { throw KeyhavenClientError.invalidResponse(status: status) }
        return IntegrationCredentials(
            integrationID: wire.integrationID, status: wire.status, credentialVersion: wire.credentialVersion,
            credentials: credentials)
    }

    // MARK: Templates

    /// The templates of `workspace` (the caller's personal one when nil).
    ///
    /// - Throws: ``KeyhavenClientError``.
    public func templates(in workspace: UUID? = nil) async throws -> [IntegrationTemplate] {
        let list: TemplateList = try await send(.GET, ["api", "templates"], query: Self.workspace(workspace))
        return list.templates
    }

    /// Saves a new template in `workspace` (owners and admins).
    ///
    /// - Throws: ``KeyhavenClientError``: `.validation` naming each bad field, `.conflict` for a taken name.
    public func createTemplate(_ template: NewTemplate, in workspace: UUID? = nil) async throws -> IntegrationTemplate {
        try await send(.POST, ["api", "templates"], query: Self.workspace(workspace), body: template.body)
    }

    /// Replaces template `id` of `workspace` (owners and admins).
    ///
    /// - Throws: ``KeyhavenClientError``.
    public func replaceTemplate(_ id: UUID, with template: NewTemplate, in workspace: UUID? = nil) async throws
        -> IntegrationTemplate
    {
        try await send(
            .PUT, ["api", "templates", id.uuidString.lowercased()], query: Self.workspace(workspace),
            body: template.body)
    }

    /// Deletes template `id` of `workspace` (owners and admins); integrations made from it keep their settings.
    ///
    /// - Throws: ``KeyhavenClientError``.
    public func deleteTemplate(_ id: UUID, in workspace: UUID? = nil) async throws {
        let _: Empty = try await send(
            .DELETE, ["api", "templates", id.uuidString.lowercased()], query: Self.workspace(workspace))
    }

    private static func workspace(_ id: UUID?) -> [(String, String)] {
        id.map { [("workspace_id", $0.uuidString.lowercased())] } ?? []
    }

    // MARK: Transport

    private struct Empty: Decodable {}

    private func send<Result: Decodable>(
        _ method: HTTPMethod, _ path: [String], query: [(String, String)] = [], body: JSON? = nil
    ) async throws -> Result {
        let (status, data, _) = try await exchange(method, path, query: query, body: body)
        if Result.self == Empty.self, let empty = Empty() as? Result { return empty }
        do {
            return try Self.decoder.decode(Result.self, from: data)
        } catch {
            throw KeyhavenClientError.invalidResponse(status: status)
        }
    }

    /// Sends one request; returns the status and body of a 2xx answer and throws the typed error for any other.
    private func exchange(
        _ method: HTTPMethod, _ path: [String], query: [(String, String)] = [], body: JSON? = nil
    ) async throws -> (Int, Data, HTTPHeaders) {
        guard var components = URLComponents(url: baseURL, resolvingAgainstBaseURL: false) else {
            throw KeyhavenClientError.invalidInput("The base URL is not usable.")
        }
        let base =
            components.percentEncodedPath.hasSuffix("/")
            ? String(components.percentEncodedPath.dropLast()) : components.percentEncodedPath
        components.percentEncodedPath = base + "/" + path.joined(separator: "/")
        components.queryItems = query.isEmpty ? nil : query.map { URLQueryItem(name: $0.0, value: $0.1) }
        guard let url = components.url else { throw KeyhavenClientError.invalidInput("The base URL is not usable.") }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "KeyhavenClient/1")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            let data = (try? Self.encoder.encode(body)) ?? Data("{}".utf8)
            request.body = .bytes(ByteBuffer(bytes: data))
        }
        let response: HTTPClientResponse
        let buffer: ByteBuffer
        do {
            let nanoseconds =
                timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
            response = try await http.execute(request, timeout: .nanoseconds(nanoseconds))
            buffer = try await response.body.collect(upTo: 4 * 1024 * 1024)
        } catch {
            // The underlying error can quote the request; only its type is kept.
            throw KeyhavenClientError.transport("\(type(of: error))")
        }
        let data = Data(buffer.readableBytesView)
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            throw KeyhavenClientError.from(
                status: status, body: data, retryAfter: response.headers.first(name: "Retry-After"))
        }
        return (status, data, response.headers)
    }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    private static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            if let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) {
                return date
            }
            if let date = try? Date(text, strategy: Date.ISO8601FormatStyle()) { return date }
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a date"))
        }
        return decoder
    }()
}
