import Foundation
import Hummingbird
import KeyhavenCore
import KeyhavenGateway
import KeyhavenServices

/// A workspace's negotiated prices (`/api/orgs/{id}/prices`, SPEC §13): they replace the price table's for their
/// models in that workspace's costs from then on. Owners and admins set them; anyone who sees the workspace reads
/// them. A personal workspace's id works too.
public struct PricesController: Sendable {
    let service: UsageService

    /// Creates the controller.
    public init(service: UsageService) {
        self.service = service
    }

    /// Adds the routes to the `/api/orgs` group.
    public func addRoutes(to group: RouterGroup<UserContext>) {
        group.get(":id/prices", use: list)
        group.put(":id/prices", use: replace)
    }

    @Sendable func list(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsRead)
        let prices = try await service.prices(in: try UUID.path(context), by: context.caller(request))
        return Response.json(status: .ok, PriceListResponse(prices: prices))
    }

    @Sendable func replace(_ request: Request, context: UserContext) async throws -> Response {
        try context.require(.integrationsWrite)
        let prices = try await service.replacePrices(in: try UUID.path(context), by: context.caller(request)) {
            let decoded = try await PricesRequest.read(request, context: context)
            var errors = decoded.errors
            // Each price's fields, as sent: one it does not declare is refused like a body's.
            if case .array(let entries)? = decoded.sent["prices"] {
                for (index, entry) in entries.enumerated() {
                    guard case .object(let fields) = entry else { continue }
                    for key in fields.keys where !PricesRequest.entryFields.contains(key) {
                        errors["prices[\(index)].\(key)"] = "is not a known field"
                    }
                }
            }
            return try decoded.body.validated(errors).orThrow()
        }
        return Response.json(status: .ok, PriceListResponse(prices: prices))
    }
}

/// `PUT /api/orgs/{id}/prices`: `{prices: [{model, input_usd_per_million, output_usd_per_million,
/// cached_input_usd_per_million?}]}`, replacing the workspace's list.
struct PricesRequest: RequestBody {
    static let knownFields: Set<String>? = ["prices"]
    /// The fields of one price.
    static let entryFields: Set<String> = [
        "model", "input_usd_per_million", "output_usd_per_million", "cached_input_usd_per_million",
    ]

    struct Entry: Decodable, Sendable {
        var model: Input<String>?
        var input: Input<Double>?
        var output: Input<Double>?
        var cachedInput: Input<Double>?

        enum CodingKeys: String, CodingKey {
            case model
            case input = "input_usd_per_million"
            case output = "output_usd_per_million"
            case cachedInput = "cached_input_usd_per_million"
        }
    }

    var prices: Input<[Entry]>?

    func validated(_ errors: FieldErrors) -> Result<[PriceOverride], FieldErrors> {
        var errors = errors
        guard let entries = prices?.value, entries.count <= PriceOverride.maximumCount else {
            errors["prices"] = "must be a list of at most \(PriceOverride.maximumCount) prices"
            return .failure(errors)
        }
        var result: [PriceOverride] = []
        for (index, entry) in entries.enumerated() {
            let field = "prices[\(index)]"
            let model = TextRule.text(
                entry.model, "\(field).model", required: true, maximumLength: 200, errors: &errors)?
                .lowercased()
            func micros(_ input: Input<Double>?, _ name: String, required: Bool) -> Int64? {
                guard let input else {
                    if required { errors["\(field).\(name)"] = "is required" }
                    return nil
                }
                guard let dollars = input.value, dollars.isFinite, dollars >= 0, dollars <= 1_000_000 else {
                    errors["\(field).\(name)"] = "must be a number of dollars per million tokens from 0 to 1000000"
                    return nil
                }
                return Int64((dollars * 1_000_000).rounded())
            }
            let input = micros(entry.input, "input_usd_per_million", required: true)
            let output = micros(entry.output, "output_usd_per_million", required: true)
            let cached = micros(entry.cachedInput, "cached_input_usd_per_million", required: false)
            if let model, let input, let output {
                result.append(
                    PriceOverride(
                        model: model, inputMicrosPerMillion: input, outputMicrosPerMillion: output,
                        cachedInputMicrosPerMillion: cached))
            }
        }
        return errors.problems.isEmpty ? .success(result) : .failure(errors)
    }
}

/// A workspace's negotiated prices.
struct PriceListResponse: ResponseBody {
    let prices: [PriceOverride]

    var json: JSONValue {
        .object([
            "prices": .array(
                prices.map { price in
                    .object([
                        "model": .string(price.model),
                        "input_usd_per_million": wireDollars(price.inputMicrosPerMillion),
                        "output_usd_per_million": wireDollars(price.outputMicrosPerMillion),
                        "cached_input_usd_per_million": wireDollars(price.cachedInputMicrosPerMillion),
                    ])
                })
        ])
    }
}
