import Crypto
import Foundation
import Hummingbird
import KeyhavenCore

/// A request body type: a `Decodable` struct whose fields are ``Input`` values, read strictly (a field it does not
/// declare is refused with a 422 naming it) and then validated into a value with no optionals left.
protocol RequestBody: Decodable {
    /// The fields the body may carry; any other is reported as `is not a known field`.
    static var knownFields: Set<String>? { get }
}

/// A body as decoded, with the members exactly as sent (for the few rules that tell `null` from absent) and the
/// problems found so far (unknown fields).
struct Decoded<Body: RequestBody> {
    var body: Body
    var sent: [String: JSONValue]
    var errors: FieldErrors
}

/// One field as sent: a value of the expected JSON type, or something else. Decoding a field never fails, so every
/// problem of a body is reported at once, each against its field.
package enum Input<Value: Decodable & Sendable>: Decodable, Sendable {
    case value(Value)
    case invalid

    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Value.self) { self = .value(value) } else { self = .invalid }
    }

    var value: Value? { if case .value(let value) = self { value } else { nil } }
}

extension RequestBody {
    static var knownFields: Set<String>? { nil }

    /// Reads the body: 415 unless `Content-Type: application/json`, 413 over 64 KiB, 400 unless a JSON object.
    static func read(_ request: Request, context: some RequestContext) async throws -> Decoded<Self> {
        let contentType = request.headers[.contentType]?.lowercased() ?? ""
        guard contentType == "application/json" || contentType.hasPrefix("application/json;") else {
            throw KeyhavenError.unsupportedMediaType
        }
        let buffer = try await request.body.collect(upTo: context.maxUploadSize)
        let data = Data(buffer.readableBytesView)
        guard case .object(let fields)? = try? JSONDecoder().decode(JSONValue.self, from: data),
            let body = try? JSONDecoder().decode(Self.self, from: data)
        else {
            throw KeyhavenError.badRequest("The request body must be a JSON object.")
        }
        var errors = FieldErrors()
        if let known = knownFields {
            for key in fields.keys where !known.contains(key) { errors[key] = "is not a known field" }
        }
        return Decoded(body: body, sent: fields, errors: errors)
    }
}

/// The rules for text fields, shared by every body.
package enum TextRule {
    /// A display string: at most `maximumLength` code points as sent, without control characters, line or
    /// paragraph separators, private-use code points, or invisible formatting characters such as right-to-left
    /// overrides (the zero-width joiner of emoji sequences aside), and not blank; returned trimmed. Null counts as
    /// absent. The rules are the `pattern` and `maxLength` of the names in openapi.json, which count code points as
    /// JSON Schema does.
    static func text(
        _ input: Input<String>?, _ name: String, required: Bool, maximumLength: Int = 200,
        errors: inout FieldErrors
    ) -> String? {
        guard let input else {
            if required { errors[name] = "is required" }
            return nil
        }
        guard let raw = input.value, raw.unicodeScalars.count <= maximumLength,
            !raw.unicodeScalars.contains(where: isRefused),
            case let text = raw.trimmingCharacters(in: .whitespaces), !text.isEmpty
        else {
            errors[name] = "must be a non-empty string of at most \(maximumLength) visible characters"
            return nil
        }
        return text
    }

    /// A string taken exactly as sent (passwords); anything but a string counts as missing.
    static func raw(_ input: Input<String>?, _ name: String, errors: inout FieldErrors) -> String? {
        guard let text = input?.value else {
            errors[name] = "is required"
            return nil
        }
        return text
    }

    package static func isRefused(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator, .privateUse, .surrogate: true
        case .format: scalar != "\u{200D}"
        default: false
        }
    }
}

/// A response body, written by the direct JSON writer (`JSONValue.jsonText`) rather than an encoder.
protocol ResponseBody {
    /// The body as JSON.
    var json: JSONValue { get }

    /// Appends the body's JSON text: by default ``json``'s; bodies written for every row of a list write their
    /// fields directly, to the same bytes.
    func write(to output: inout [UInt8])
}

extension ResponseBody {
    func write(to output: inout [UInt8]) { json.write(to: &output) }
}

extension JSONValue: ResponseBody {
    var json: JSONValue { self }
}

/// The content type of every JSON body.
let jsonContentType = "application/json; charset=utf-8"

/// A response body's JSON text, written by the direct writer.
func jsonBytes(_ body: some ResponseBody) -> ByteBuffer {
    var output: [UInt8] = []
    output.reserveCapacity(1024)
    body.write(to: &output)
    return ByteBuffer(bytes: output)
}

extension Response {
    /// The one JSON response: a typed response body (or a `JSONValue`), written by the direct writer, with
    /// `Content-Type: application/json; charset=utf-8`.
    static func json(status: HTTPResponse.Status, _ body: some ResponseBody) -> Response {
        Response(status: status, headers: [.contentType: jsonContentType], body: .init(byteBuffer: jsonBytes(body)))
    }

    /// A 200 JSON response with a strong `ETag` (a hash of its bytes), or `304 Not Modified` with no body when
    /// `request`'s `If-None-Match` names that tag: a client polling a list that did not change gets no body.
    static func json(revalidating request: Request, _ body: some ResponseBody) -> Response {
        var output: [UInt8] = []
        output.reserveCapacity(1024)
        body.write(to: &output)
        let digest = SHA256.hash(data: output).prefix(16)
        let tag = "\"" + Data(digest).base64EncodedString() + "\""
        let sent = request.headers[values: .ifNoneMatch].flatMap { $0.split(separator: ",") }
        if sent.contains(where: { $0.trimmingCharacters(in: .whitespaces) == tag || $0 == "*" }) {
            return Response(status: .notModified, headers: [.eTag: tag])
        }
        return Response(
            status: .ok,
            headers: [.contentType: jsonContentType, .eTag: tag],
            body: .init(byteBuffer: ByteBuffer(bytes: output)))
    }
}

/// Dates on the wire: ISO 8601 with milliseconds, UTC; null when unset.
func wireDate(_ date: Date?) -> JSONValue {
    date.map { .string($0.timestampText) } ?? .null
}

/// Ids on the wire: lowercase UUIDs.
func wireID(_ id: UUID) -> JSONValue { .string(id.lowercasedText) }

extension UUID {
    /// Parses a path parameter; a malformed id is simply not found.
    package static func path(_ context: some RequestContext, _ name: String = "id") throws -> UUID {
        guard let text = context.parameters.get(name), let id = UUID(text: text) else {
            throw KeyhavenError.notFound
        }
        return id
    }
}

extension FieldErrors {
    /// Adds problems found by another rule; a field keeps its first problem.
    mutating func merge(_ other: FieldErrors) {
        problems.merge(other.problems) { first, _ in first }
    }
}

extension Result where Failure == FieldErrors {
    /// The validated value, or the 422 `validationFailed` error naming every bad field.
    func orThrow() throws -> Success {
        switch self {
        case .success(let value): return value
        case .failure(let errors): throw errors.error
        }
    }
}
