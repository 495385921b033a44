import Foundation
import KeyhavenCore
import KeyhavenWeb

/// The served OpenAPI document, and a JSON-Schema checker for the subset of JSON Schema 2020-12 it uses: `type`
/// (one or a list), `properties`, `required`, `additionalProperties`, `propertyNames`, `items`, `enum`, `const`,
/// `oneOf`, `minimum`/`maximum`, `minLength`/`maxLength`, `pattern`, `minItems`/`maxItems`,
/// `minProperties`/`maxProperties`, `format` (`uuid`, `date-time`) and local `$ref`s. A keyword it does not know
/// fails the check, so the document cannot quietly use more than is checked.
public struct OpenAPIContract: Sendable {
    /// The document as parsed JSON.
    public let document: JSONValue

    /// A checker whose local `$ref`s resolve in `document` (a JSON Schema of its own, such as the provider
    /// catalog's).
    public init(document: JSONValue) {
        self.document = document
    }

    /// Loads the document the server serves.
    public init() throws {
        guard case .object? = try? JSONDecoder().decode(JSONValue.self, from: OpenAPIDocument.data) else {
            throw TestSetupError("openapi.json is not a JSON object")
        }
        document = try JSONDecoder().decode(JSONValue.self, from: OpenAPIDocument.data)
    }

    /// The document's operations as `METHOD /path` with `{param}` placeholders.
    public var operations: Set<String> {
        var result = Set<String>()
        for (path, item) in document["paths"]?.objectValue ?? [:] {
            for method in (item.objectValue ?? [:]).keys where Self.methods.contains(method) {
                result.insert("\(method.uppercased()) \(path)")
            }
        }
        return result
    }

    static let methods: Set<String> = ["get", "put", "post", "delete", "patch", "head", "options", "trace"]

    /// Whether a path belongs to what the document describes: the JSON API and the operational routes. Web pages
    /// are not part of it.
    public static func isDescribed(_ path: String) -> Bool {
        path == "/api" || path.hasPrefix("/api/")
            || ["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(path)
    }

    /// Checks one response against the document: its status must be listed for the operation, and a JSON body
    /// must match that status's schema. A path or method the document does not list must be answered with a 4xx
    /// error body. Returns the problems; empty when the response conforms.
    public func check(method: String, path rawPath: String, status: Int, contentType: String?, body: Data) -> [String] {
        let path = String(rawPath.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        guard Self.isDescribed(path) else { return [] }
        let label = "\(method) \(path) → \(status)"
        guard let item = match(path)?.1, let operation = item[method.lowercased()]?.objectValue else {
            guard (400..<500).contains(status) else { return ["\(label): an undocumented route answered \(status)"] }
            return checkBody(
                label, schema: .object(["$ref": .string("#/components/schemas/Error")]), body: body,
                contentType: contentType, mediaType: "application/json")
        }
        guard var response = operation["responses"]?[String(status)] ?? operation["responses"]?["default"] else {
            return ["\(label): status \(status) is not documented"]
        }
        response = resolve(response)
        guard let content = response["content"]?.objectValue, let first = content.first else {
            return body.isEmpty ? [] : ["\(label): a body where the document has none"]
        }
        // The documented media type the response has, else the first one (and the mismatch is reported).
        let actual = contentType?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        let (mediaType, media) = content[actual].map { (actual, $0) } ?? (first.key, first.value)
        guard let schema = media["schema"] else { return [] }
        return checkBody(label, schema: schema, body: body, contentType: contentType, mediaType: mediaType)
    }

    private func checkBody(_ label: String, schema: JSONValue, body: Data, contentType: String?, mediaType: String)
        -> [String]
    {
        let actual = contentType?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard actual == mediaType else { return ["\(label): content type \(actual), documented \(mediaType)"] }
        guard mediaType == "application/json" else { return [] }
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: body) else {
            return ["\(label): the body is not JSON"]
        }
        var problems: [String] = []
        validate(value, against: schema, at: "$", into: &problems)
        return problems.map { "\(label): \($0)" }
    }

    /// The path item whose template matches a concrete path.
    func match(_ path: String) -> (String, [String: JSONValue])? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        for (template, item) in document["paths"]?.objectValue ?? [:] {
            let templateParts = template.split(separator: "/", omittingEmptySubsequences: false)
            guard templateParts.count == parts.count else { continue }
            let fits = zip(templateParts, parts).allSatisfy { pattern, part in
                (pattern.hasPrefix("{") && pattern.hasSuffix("}") && !part.isEmpty) || pattern == part
            }
            if fits, let object = item.objectValue { return (template, object) }
        }
        return nil
    }

    func resolve(_ value: JSONValue) -> JSONValue {
        guard let reference = value["$ref"]?.stringValue, reference.hasPrefix("#/") else { return value }
        var current: JSONValue? = document
        for part in reference.dropFirst(2).split(separator: "/") { current = current?[String(part)] }
        return current.map(resolve) ?? .null
    }

    /// Validates `value` against `schema`, appending each problem with its JSON path.
    public func validate(
        _ value: JSONValue, against schema: JSONValue, at path: String, into problems: inout [String]
    ) {
        func outside(_ keyword: String, _ count: Double, _ bound: Double) -> Bool {
            keyword.hasPrefix("min") ? count < bound : count > bound
        }
        if case .bool(let allowed) = schema {
            if !allowed { problems.append("\(path): not allowed") }
            return
        }
        guard let keywords = schema.objectValue else {
            problems.append("\(path): the schema is not an object")
            return
        }
        for (keyword, argument) in keywords {
            switch keyword {
            case "$ref":
                let target = resolve(schema)
                if target == .null {
                    problems.append("\(path): unresolved \(argument)")
                } else {
                    validate(value, against: target, at: path, into: &problems)
                }
            case "type":
                let names = argument.arrayValue?.compactMap(\.stringValue) ?? [argument.stringValue ?? ""]
                if !names.contains(where: { Self.hasType(value, $0) }) {
                    let expected = names.joined(separator: " or ")
                    problems.append("\(path): expected \(expected), found \(Self.typeName(value))")
                    return
                }
            case "properties":
                guard case .object(let object) = value else { continue }
                for (name, subschema) in argument.objectValue ?? [:] {
                    guard let member = object[name] else { continue }
                    validate(member, against: subschema, at: "\(path).\(name)", into: &problems)
                }
            case "required":
                guard case .object(let object) = value else { continue }
                for name in argument.arrayValue?.compactMap(\.stringValue) ?? [] where object[name] == nil {
                    problems.append("\(path): missing required \(name)")
                }
            case "additionalProperties":
                guard case .object(let object) = value else { continue }
                let known = Set(keywords["properties"]?.objectValue?.keys.map { $0 } ?? [])
                for (name, member) in object where !known.contains(name) {
                    if case .bool(false) = argument {
                        problems.append("\(path): unexpected property \(name)")
                    } else {
                        validate(member, against: argument, at: "\(path).\(name)", into: &problems)
                    }
                }
            case "propertyNames":
                guard case .object(let object) = value else { continue }
                for name in object.keys {
                    validate(.string(name), against: argument, at: "\(path){\(name)}", into: &problems)
                }
            case "items":
                guard case .array(let items) = value else { continue }
                for (index, item) in items.enumerated() {
                    validate(item, against: argument, at: "\(path)[\(index)]", into: &problems)
                }
            case "enum":
                if !(argument.arrayValue ?? []).contains(value) {
                    problems.append("\(path): a \(Self.typeName(value)) not in the enum")
                }
            case "const":
                if argument != value { problems.append("\(path): a \(Self.typeName(value)) that is not the constant") }
            case "oneOf":
                let matches = (argument.arrayValue ?? []).filter { option in
                    var inner: [String] = []
                    validate(value, against: option, at: path, into: &inner)
                    return inner.isEmpty
                }
                if matches.count != 1 {
                    problems.append("\(path): matches \(matches.count) of the oneOf options, not 1")
                }
            case "minimum", "maximum":
                guard case .number(let number) = value, case .number(let bound) = argument else { continue }
                if keyword == "minimum" ? number < bound : number > bound {
                    problems.append("\(path): \(number) is out of range")
                }
            case "minLength", "maxLength":
                guard case .string(let text) = value, case .number(let bound) = argument else { continue }
                let count = Double(text.unicodeScalars.count)
                if outside(keyword, count, bound) { problems.append("\(path): length \(count) is out of range") }
            case "minItems", "maxItems":
                guard case .array(let items) = value, case .number(let bound) = argument else { continue }
                let count = Double(items.count)
                if outside(keyword, count, bound) { problems.append("\(path): \(items.count) items is out of range") }
            case "minProperties", "maxProperties":
                guard case .object(let object) = value, case .number(let bound) = argument else { continue }
                let count = Double(object.count)
                if outside(keyword, count, bound) {
                    problems.append("\(path): \(object.count) properties is out of range")
                }
            case "pattern":
                guard case .string(let text) = value, let pattern = argument.stringValue else { continue }
                guard let regex = try? NSRegularExpression(pattern: pattern) else {
                    problems.append("\(path): the pattern \(pattern) does not compile")
                    continue
                }
                if regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) == nil {
                    problems.append("\(path): does not match \(pattern)")
                }
            case "format":
                guard case .string(let text) = value else { continue }
                switch argument.stringValue {
                case "uuid": if UUID(uuidString: text) == nil { problems.append("\(path): not a uuid") }
                case "date-time":
                    if (try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))) == nil,
                        (try? Date(text, strategy: Date.ISO8601FormatStyle())) == nil
                    {
                        problems.append("\(path): not a date-time")
                    }
                case "email": if !text.contains("@") { problems.append("\(path): not an email") }
                case "date":
                    if (try? Date("\(text)T00:00:00Z", strategy: Date.ISO8601FormatStyle())) == nil || text.count != 10
                    {
                        problems.append("\(path): not a date")
                    }
                default: problems.append("\(path): unknown format \(argument)")
                }
            case "description", "discriminator", "default", "title", "example", "examples", "deprecated", "$schema",
                "$defs":
                continue
            default:
                problems.append("\(path): the checker does not know the keyword \(keyword)")
            }
        }
    }

    static func hasType(_ value: JSONValue, _ name: String) -> Bool {
        switch (name, value) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object),
            ("number", .number):
            true
        case ("integer", .number(let number)): number == number.rounded()
        default: false
        }
    }

    static func typeName(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool: "boolean"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        case .number: "number"
        }
    }
}

extension JSONValue {
    /// The member `key` of an object; nil for anything else.
    public subscript(_ key: String) -> JSONValue? {
        if case .object(let object) = self { object[key] } else { nil }
    }

    /// The items of an array; nil for anything else.
    public var arrayValue: [JSONValue]? { if case .array(let items) = self { items } else { nil } }
    /// The members of an object; nil for anything else.
    public var objectValue: [String: JSONValue]? { if case .object(let object) = self { object } else { nil } }
}
