import Hummingbird

/// The request context of every Keyhaven route.
public struct AppRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }

    /// Request bodies are limited to 64 KiB (SPEC §6).
    public var maxUploadSize: Int { 64 * 1024 }
}
