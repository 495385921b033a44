import Foundation
import KeyhavenCore
import KeyhavenTestSupport
import Testing

@testable import KeyhavenCrypto

@Suite("Keyring files")
struct KeyringFileTests {
    @Test("a saved keyring is mode 0600, loads back the same keys, and holds no key in clear elsewhere")
    func saveAndLoad() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let file = KeyringFile(path: directory.path + "/nested/keyring.json")
        let keys = [MasterKey.generate(), MasterKey.generate()]
        try file.save(Keyring(keys))
        let attributes = try FileManager.default.attributesOfItem(atPath: file.path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(!file.isReadableByOthers)
        let loaded = try file.load()
        #expect(loaded.ids == keys.map(\.id))
        let binding = SecretBinding(secretID: UUID(), integrationID: UUID(), ownerID: UUID(), version: 1)
        for key in keys {
            let sealed = try Envelope.seal(SecretBytes(utf8: "x"), binding: binding, kek: key)
            let opened = try Envelope.open(sealed, binding: binding, kek: #require(loaded.key(id: key.id)))
            #expect(opened.constantTimeEquals(SecretBytes(utf8: "x")))
        }
        let text = try String(contentsOfFile: file.path, encoding: .utf8)
        #expect(text.contains("keyhaven-keyring"))
    }

    @Test("malformed keyrings are refused with a reason")
    func malformed() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/keyring.json"
        let cases = [
            "not json",
            #"{"format":"other","version":1,"keys":[]}"#,
            #"{"format":"keyhaven-keyring","version":1,"keys":[{"id":"a","key":"c2hvcnQ="}]}"#,
            #"{"format":"keyhaven-keyring","version":1,"keys":[{"id":"bad "#
                + #"id!","key":"\#(Data(count: 32).base64EncodedString())"}]}"#,
        ]
        for contents in cases {
            try contents.write(toFile: path, atomically: true, encoding: .utf8)
            #expect(throws: KeyhavenError.self) { try KeyringFile(path: path).load() }
        }
        #expect(throws: KeyhavenError.self) { try KeyringFile(path: directory.path + "/missing.json").load() }
    }

    @Test("the environment key and the file key may not share an id with different material")
    func conflictingSources() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let file = KeyringFile(path: directory.path + "/keyring.json")
        try file.save(Keyring([try MasterKey.generate(id: "primary")]))
        let source = KeyringSource(environmentKey: try MasterKey.generate(id: "primary"), file: file)
        #expect(throws: KeyhavenError.self) { try source.load() }
    }

    @Test("master keys must be exactly 32 bytes of base64")
    func keyFormat() {
        #expect(throws: KeyhavenError.self) { try MasterKey(id: "k", base64: "not base64!") }
        #expect(throws: KeyhavenError.self) { try MasterKey(id: "k", base64: Data(count: 16).base64EncodedString()) }
        #expect(throws: Never.self) { try MasterKey(id: "k", base64: Data(count: 32).base64EncodedString()) }
    }
}
