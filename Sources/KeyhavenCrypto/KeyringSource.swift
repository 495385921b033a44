import KeyhavenCore

/// Where this process finds its master keys: `KEYHAVEN_MASTER_KEY`, a keyring file, or both.
public struct KeyringSource: Sendable {
    /// The key given directly in the environment, if any.
    public var environmentKey: MasterKey?
    /// The keyring file, if one is configured (it may not exist yet).
    public var file: KeyringFile?

    /// Creates a source from an environment key and/or a keyring file.
    public init(environmentKey: MasterKey? = nil, file: KeyringFile? = nil) {
        self.environmentKey = environmentKey
        self.file = file
    }

    /// Every key the source holds now: the environment key first, then the file's keys; a missing file adds none.
    ///
    /// - Throws: `KeyhavenError.keyring` if the file exists but cannot be read, or holds another key under the
    ///   environment key's id.
    public func load() throws -> Keyring {
        var keyring = Keyring()
        if let environmentKey { keyring.add(environmentKey) }
        if let file, file.exists {
            for key in try file.load().keys {
                if let existing = keyring.key(id: key.id), existing.key != key.key {
                    throw KeyhavenError.keyring(
                        "KEYHAVEN_MASTER_KEY and the keyring file \(file.path) both hold a key named \(key.id), "
                            + "with different material")
                }
                keyring.add(key)
            }
        }
        return keyring
    }

    /// Names the configured places, for messages: "KEYHAVEN_MASTER_KEY and the keyring file ./data/keyring.json".
    public var summary: String {
        var parts: [String] = []
        if environmentKey != nil { parts.append("KEYHAVEN_MASTER_KEY") }
        if let file { parts.append("the keyring file \(file.path)\(file.exists ? "" : " (which does not exist)")") }
        return parts.isEmpty ? "no master key source" : parts.joined(separator: " and ")
    }
}
