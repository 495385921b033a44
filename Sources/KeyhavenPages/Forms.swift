import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenWeb
import MultipartKit

/// A submitted HTML form: `application/x-www-form-urlencoded`, or `multipart/form-data` for the file upload.
///
/// Every value is text (a file's content included) and must be valid UTF-8; a form that is not is refused
/// whole, never half read.
struct Form {
    private(set) var fields: [(name: String, value: String)] = []

    /// The first value of a field, or nil when absent.
    subscript(_ name: String) -> String? { fields.first { $0.name == name }?.value }

    /// The first value of a field with surrounding whitespace removed, or nil when absent or blank.
    func trimmed(_ name: String) -> String? {
        guard let value = self[name]?.trimmingCharacters(in: .whitespacesAndNewlines), !value.isEmpty else {
            return nil
        }
        return value
    }

    /// Every value of a field (check boxes).
    func values(_ name: String) -> [String] { fields.filter { $0.name == name }.map(\.value) }

    static let maximumFields = 64

    /// Reads the request's body as a form.
    ///
    /// - Throws: `KeyhavenError.payloadTooLarge` over the body limit, `.unsupportedMediaType` for another content
    ///   type, `.badRequest` for a form that cannot be read.
    static func read(_ request: Request, context: some RequestContext) async throws -> Form {
        let contentType = request.headers[.contentType] ?? ""
        let media = contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: context.maxUploadSize)
        } catch {
            throw KeyhavenError.payloadTooLarge
        }
        switch media {
        case "application/x-www-form-urlencoded":
            return try urlEncoded(String(buffer: buffer))
        case "multipart/form-data":
            guard let boundary = boundary(in: contentType) else {
                throw KeyhavenError.badRequest("The form could not be read.")
            }
            return try multipart(buffer, boundary: boundary)
        default:
            throw KeyhavenError.unsupportedMediaType
        }
    }

    static func urlEncoded(_ text: String) throws -> Form {
        var form = Form()
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decode(parts[0]), let value = decode(parts.count > 1 ? parts[1] : "") else {
                throw KeyhavenError.badRequest("The form could not be read.")
            }
            try form.append(name, value)
        }
        return form
    }

    private static func decode(_ text: Substring) -> String? {
        String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    /// The `boundary` parameter of a multipart content type (1 to 70 characters, as RFC 2046 allows).
    static func boundary(in contentType: String) -> String? {
        for parameter in contentType.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, pair[0].lowercased() == "boundary" else { continue }
            var value = pair[1]
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast())
            }
            return (1...70).contains(value.utf8.count) && value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
                ? value : nil
        }
        return nil
    }

    static func multipart(_ buffer: ByteBuffer, boundary: String) throws -> Form {
        let parser = MultipartParser(boundary: boundary)
        var parts: [(name: String?, body: [UInt8])] = []
        var name: String?
        var body: [UInt8] = []
        var complete = false
        parser.onHeader = { field, value in
            if field.lowercased() == "content-disposition" { name = dispositionName(value) }
        }
        parser.onBody = { chunk in body += chunk.readableBytesView }
        parser.onPartComplete = {
            parts.append((name, body))
            name = nil
            body = []
            complete = true
        }
        do {
            try parser.execute(buffer)
        } catch {
            throw KeyhavenError.badRequest("The form could not be read.")
        }
        guard complete else { throw KeyhavenError.badRequest("The form could not be read.") }
        var form = Form()
        for part in parts {
            guard let name = part.name, let value = String(validating: part.body, as: UTF8.self) else {
                throw KeyhavenError.badRequest("The form could not be read.")
            }
            try form.append(name, value)
        }
        return form
    }

    /// The `name` of a `form-data` part's Content-Disposition header.
    static func dispositionName(_ header: String) -> String? {
        for parameter in header.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, pair[0].lowercased() == "name" else { continue }
            let value = pair[1]
            guard value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") else { return value }
            return String(value.dropFirst().dropLast())
        }
        return nil
    }

    private mutating func append(_ name: String, _ value: String) throws {
        guard fields.count < Self.maximumFields else { throw KeyhavenError.badRequest("The form has too many fields.") }
        fields.append((name, value))
    }
}
