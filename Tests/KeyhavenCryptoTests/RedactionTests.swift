import Foundation
import KeyhavenCore
import Testing

@testable import KeyhavenCrypto

@Suite("Plaintext never prints")
struct RedactionTests {
    let canary = "sk-canary-redaction-4f1c2b"

    @Test("secret bytes print as <redacted> through every printing path")
    func secretBytes() {
        let secret = SecretBytes(utf8: canary)
        var dumped = ""
        dump(secret, to: &dumped)
        for printed in ["\(secret)", String(describing: secret), String(reflecting: secret), dumped, "\([secret])"] {
            #expect(!printed.contains(canary))
            #expect(!printed.contains("sk-"))
        }
        #expect("\(secret)" == "<redacted>")
    }

    @Test("a master key prints its id, never its material")
    func masterKey() throws {
        let material = Data(repeating: 0x41, count: 32)
        let key = try MasterKey(id: "kek-print", material: material)
        var dumped = ""
        dump(key, to: &dumped)
        for printed in ["\(key)", String(reflecting: key), dumped, "\(Keyring([key]))"] {
            #expect(!printed.contains(material.base64EncodedString()))
            #expect(!printed.contains("AAAA"))
        }
        #expect("\(key)".contains("kek-print"))
    }

    @Test("secrets compare equal only when every byte matches")
    func constantTimeEquals() {
        #expect(SecretBytes(utf8: canary).constantTimeEquals(SecretBytes(utf8: canary)))
        #expect(!SecretBytes(utf8: canary).constantTimeEquals(SecretBytes(utf8: canary + "x")))
        #expect(!SecretBytes(utf8: "abc").constantTimeEquals(SecretBytes(utf8: "abd")))
    }
}
