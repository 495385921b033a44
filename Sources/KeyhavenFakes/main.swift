// keyhaven-fakes: the checking fake providers as a process of their own, for the browser tests. Starts them on
// 127.0.0.1 (each answer DELAY_MS late, if given), writes what a test needs (the endpoint overrides for
// `keyhaven serve` and the credentials the fakes accept) as JSON to the path given, and runs until it is stopped.
import Foundation
import KeyhavenCore
import KeyhavenTestSupport

let arguments = Array(CommandLine.arguments.dropFirst())
guard (1...2).contains(arguments.count), let delay = Int(arguments.count == 2 ? arguments[1] : "0"), delay >= 0 else {
    FileHandle.standardError.write(Data("usage: keyhaven-fakes OUTPUT.json [DELAY_MS]\n".utf8))
    exit(2)
}
let fakes = try await FakeProviders.start(delay: .milliseconds(delay))
let root = fakes.baseURL.absoluteString
var environment: [String: String] = [:]
for (type, path) in [
    ("OPENAI", "openai"), ("ANTHROPIC", "anthropic"), ("GEMINI", "gemini"), ("GOOGLE_CLOUD", "google/token"),
    ("AWS", "aws"), ("AZURE", "azure"),
] {
    environment["KEYHAVEN_PROVIDER_\(type)_URL"] = "\(root)/\(path)"
}
var credentials: [String: String] = [
    "openai": FakeProviders.openAIKey,
    "anthropic": FakeProviders.anthropicKey,
    "gemini": FakeProviders.geminiKey,
    "aws_access_key_id": FakeProviders.awsAccessKeyID,
    "aws_secret_access_key": FakeProviders.awsSecret,
    "azure_tenant_id": FakeProviders.azureTenant,
    "azure_client_id": FakeProviders.azureClient,
    "azure_client_secret": FakeProviders.azureSecret,
]
environment["KEYHAVEN_PROVIDER_AZURE_OPENAI_URL"] = "\(root)/azure_openai/%7Bresource%7D"
environment["KEYHAVEN_PROVIDER_VERTEX_AI_URL"] = "\(root)/vertex/%7Bregion%7D"
credentials["azure_openai"] = FakeProviders.azureOpenAIKey
credentials["azure_openai_resource"] = FakeProviders.azureOpenAIResource
// The catalog's OpenAI-compatible providers, each at its own path.
for provider in FakeProviders.catalogProviders {
    environment["KEYHAVEN_PROVIDER_\(provider.id.uppercased())_URL"] = "\(root)/\(provider.id)"
    credentials[provider.id] = provider.key
}
let account = String(decoding: try JSONEncoder().encode(JSONValue.object(fakes.googleAccount)), as: UTF8.self)
credentials["google_cloud"] = account
let info: [String: Any] = ["base_url": root, "environment": environment, "credentials": credentials]
let data = try JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys])
let output = URL(fileURLWithPath: arguments[0])
try data.write(to: output.appendingPathExtension("tmp"))
guard rename(output.appendingPathExtension("tmp").path, output.path) == 0 else { exit(1) }
while true { try await Task.sleep(for: .seconds(3600)) }
