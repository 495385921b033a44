import AsyncHTTPClient
import KeyhavenCore
import KeyhavenTestSupport
import Testing

@testable import KeyhavenProviders

/// Runs `body` with the fake providers, a client, and a context pointing every provider and management API at
/// them; afterwards expects that no fake saw a request it did not expect.
func withFakeProviders(_ body: (FakeProviders, HTTPClient, ProviderClient) async throws -> Void) async throws {
    let fakes = try await FakeProviders.start()
    let client = ProviderClient.makeClient()
    let urls = fakes.managementURLs
    var endpoints = fakes.endpoints()
    endpoints.services = [.awsIAM: urls.awsIAM, .googleIAM: urls.googleIAM, .azureGraph: urls.azureGraph]
    let context = ProviderClient(client: client, endpoints: endpoints, egress: EgressPolicy(allowPrivate: true))
    do {
        try await body(fakes, client, context)
    } catch {
        try? await client.shutdown()
        await fakes.stop()
        throw error
    }
    #expect(fakes.unexpected.isEmpty, "\(fakes.unexpected)")
    try await client.shutdown()
    await fakes.stop()
}
