import Foundation
import Hummingbird
import KeyhavenCore

/// A JSON object from a request body, with typed field access that collects validation problems.
struct JSONBody {
    private(set) var fields: [String: JSONValue]
    var errors = FieldErrors()

    /// Reads the body: 415 unless `Content-Type: application/json`, 413 over 64 KiB, 400 unless a JSON object.
    static func read(_ request: Request, context: some RequestContext) async throws -> JSONBody {
        let contentType = request.headers[.contentType]?.lowercased() ?? ""
        guard contentType == "application/json" || contentType.hasPrefix("application/json;") else {
            throw KeyhavenError.unsupportedMediaType
        }
        let buffer = try await request.body.collect(upTo: context.maxUploadSize)
        guard case .object(let fields)? = try? JSONDecoder().decode(JSONValue.self, from: Data(buffer.readableBytesView)) else {
            throw KeyhavenError.badRequest("The request body must be a JSON object.")
        }
        return JSONBody(fields: fields)
    }

    /// A string field: trimmed, non-empty, at most `maximumLength` characters, without control characters, line or
    /// paragraph separators, private-use code points, or invisible formatting characters such as right-to-left
    /// overrides (the zero-width joiner of emoji sequences aside).
    mutating func string(_ name: String, required: Bool, maximumLength: Int = 200) -> String? {
        guard let value = fields[name], value != .null else {
            if required { errors[name] = "is required" }
            return nil
        }
        guard let text = value.stringValue?.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty,
            text.count <= maximumLength, !text.unicodeScalars.contains(where: Self.isRefused)
        else {
            errors[name] = "must be a non-empty string of at most \(maximumLength) visible characters"
            return nil
        }
        return text
    }

    static func isRefused(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator, .privateUse, .surrogate: true
        case .format: scalar != "\u{200D}"
        default: false
        }
    }

    /// A raw string field, taken exactly as sent (passwords).
    mutating func rawString(_ name: String) -> String? {
        guard let text = fields[name]?.stringValue else {
            errors[name] = "is required"
            return nil
        }
        return text
    }

    /// An optional boolean field.
    mutating func bool(_ name: String) -> Bool? {
        guard let value = fields[name], value != .null else { return nil }
        guard case .bool(let flag) = value else {
            errors[name] = "must be true or false"
            return nil
        }
        return flag
    }

    /// An optional object field.
    mutating func object(_ name: String) -> [String: JSONValue]? {
        guard let value = fields[name], value != .null else { return nil }
        guard case .object(let object) = value else {
            errors[name] = "must be an object"
            return nil
        }
        return object
    }

    /// Marks every field not in `allowed` as unknown.
    mutating func rejectUnknown(_ allowed: Set<String>) {
        for key in fields.keys where !allowed.contains(key) { errors[key] = "is not a known field" }
    }

    /// Adds problems found by another validator.
    mutating func merge(_ other: FieldErrors) {
        errors.problems.merge(other.problems) { first, _ in first }
    }

    /// Throws the 422 error if any problem was found.
    func validate() throws {
        if !errors.isEmpty { throw errors.error }
    }
}

extension UUID {
    /// Parses a path parameter; a malformed id is simply not found.
    static func path(_ context: some RequestContext, _ name: String = "id") throws -> UUID {
        guard let text = context.parameters.get(name), let id = UUID(uuidString: text) else {
            throw KeyhavenError.notFound
        }
        return id
    }
}
