import Foundation
import KeyhavenCore
import Testing

@testable import KeyhavenCrypto

@Suite("Envelope encryption")
struct EnvelopeTests {
    let kek: MasterKey
    let binding = SecretBinding(secretID: UUID(), integrationID: UUID(), ownerID: UUID(), version: 1)
    let plaintext = "sk-proj-canary-0123456789abcdef"

    init() throws {
        kek = try MasterKey.generate(id: "kek-test")
    }

    func seal() throws -> SealedSecret {
        try Envelope.seal(SecretBytes(utf8: plaintext), binding: binding, kek: kek)
    }

    func text(_ bytes: SecretBytes) -> String {
        bytes.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
    }

    @Test("a sealed secret opens to the same bytes in its own row")
    func roundTrip() throws {
        let sealed = try seal()
        #expect(sealed.kekID == kek.id)
        #expect(sealed.nonce.count == 12)
        #expect(sealed.wrappedDEK.count == 12 + 32 + 16)
        #expect(sealed.ciphertext.count == plaintext.utf8.count + 16)
        #expect(sealed.ciphertext.range(of: Data(plaintext.utf8)) == nil)
        #expect(text(try Envelope.open(sealed, binding: binding, kek: kek)) == plaintext)
    }

    @Test(
        "one flipped byte anywhere in the nonce, ciphertext or wrapped data key fails to open",
        arguments: ["nonce", "ciphertext", "wrapped_dek"])
    func tampering(part: String) throws {
        let sealed = try seal()
        let length =
            switch part {
            case "nonce": sealed.nonce.count
            case "ciphertext": sealed.ciphertext.count
            default: sealed.wrappedDEK.count
            }
        for index in 0..<length {
            var tampered = sealed
            switch part {
            case "nonce": tampered.nonce[tampered.nonce.startIndex + index] ^= 0x01
            case "ciphertext": tampered.ciphertext[tampered.ciphertext.startIndex + index] ^= 0x80
            default: tampered.wrappedDEK[tampered.wrappedDEK.startIndex + index] ^= 0x10
            }
            #expect(throws: KeyhavenError.decryptionFailed) {
                try Envelope.open(tampered, binding: binding, kek: kek)
            }
        }
    }

    @Test("truncated or empty parts fail to open instead of crashing")
    func truncated() throws {
        let sealed = try seal()
        for variant in [
            SealedSecret(kekID: kek.id, wrappedDEK: Data(), nonce: sealed.nonce, ciphertext: sealed.ciphertext),
            SealedSecret(kekID: kek.id, wrappedDEK: sealed.wrappedDEK, nonce: Data(), ciphertext: sealed.ciphertext),
            SealedSecret(kekID: kek.id, wrappedDEK: sealed.wrappedDEK, nonce: sealed.nonce, ciphertext: Data()),
            SealedSecret(
                kekID: kek.id, wrappedDEK: sealed.wrappedDEK.prefix(20), nonce: sealed.nonce,
                ciphertext: sealed.ciphertext),
        ] {
            #expect(throws: KeyhavenError.decryptionFailed) { try Envelope.open(variant, binding: binding, kek: kek) }
        }
    }

    @Test("a ciphertext opens only in the row it was sealed for")
    func bindingIsEnforced() throws {
        let sealed = try seal()
        let others = [
            SecretBinding(secretID: UUID(), integrationID: binding.integrationID, ownerID: binding.ownerID, version: 1),
            SecretBinding(secretID: binding.secretID, integrationID: UUID(), ownerID: binding.ownerID, version: 1),
            SecretBinding(
                secretID: binding.secretID, integrationID: binding.integrationID, ownerID: UUID(), version: 1),
            SecretBinding(
                secretID: binding.secretID, integrationID: binding.integrationID, ownerID: binding.ownerID, version: 2),
        ]
        for other in others {
            #expect(throws: KeyhavenError.decryptionFailed) { try Envelope.open(sealed, binding: other, kek: kek) }
        }
    }

    @Test("another master key, even under the same id, does not open the data key")
    func wrongKey() throws {
        let sealed = try seal()
        let impostor = try MasterKey.generate(id: kek.id)
        #expect(throws: KeyhavenError.decryptionFailed) { try Envelope.open(sealed, binding: binding, kek: impostor) }
        #expect(throws: KeyhavenError.self) { try Envelope.open(sealed, binding: binding, keyring: Keyring()) }
    }

    @Test("re-wrapping moves the data key to the new master key and leaves the ciphertext as it was")
    func rewrap() throws {
        var sealed = try seal()
        let next = try MasterKey.generate(id: "kek-next")
        let rewrapped = try Envelope.rewrap(sealed.wrappedDEK, secretID: binding.secretID, from: kek, to: next)
        #expect(rewrapped != sealed.wrappedDEK)
        sealed.wrappedDEK = rewrapped
        sealed.kekID = next.id
        #expect(text(try Envelope.open(sealed, binding: binding, kek: next)) == plaintext)
        #expect(throws: KeyhavenError.decryptionFailed) { try Envelope.open(sealed, binding: binding, kek: kek) }
        // The wrap is bound to the key id too: the new wrapping does not open under another id with the same key.
        #expect(throws: KeyhavenError.decryptionFailed) {
            try Envelope.rewrap(rewrapped, secretID: UUID(), from: next, to: kek)
        }
    }

    @Test("100,000 seals never repeat a (key, nonce) pair, a data key, or a row id")
    func nonceUniqueness() throws {
        var dataKeys = Set<Data>()
        var dataPairs = Set<Data>()
        var wrapNonces = Set<Data>()
        var rowIDs = Set<UUID>()
        let count = 100_000
        let message = SecretBytes(utf8: "x")
        for _ in 0..<count {
            // The put path: row id, data key and both nonces from one CSPRNG read.
            let (binding, sealed) = try Envelope.sealNewRow(
                message, integrationID: self.binding.integrationID, ownerID: self.binding.ownerID, version: 1, kek: kek)
            let dek = try Envelope.unwrap(sealed.wrappedDEK, secretID: binding.secretID, kek: kek)
                .withUnsafeBytes { Data($0) }
            dataKeys.insert(dek)
            dataPairs.insert(dek + sealed.nonce)
            // Every data key is wrapped under the same master key: its wrap nonces must all differ.
            wrapNonces.insert(sealed.wrappedDEK.prefix(12))
            rowIDs.insert(binding.secretID)
        }
        #expect(dataKeys.count == count)
        #expect(dataPairs.count == count)
        #expect(wrapNonces.count == count)
        #expect(rowIDs.count == count)
        let (binding, sealed) = try Envelope.sealNewRow(
            message, integrationID: UUID(), ownerID: UUID(), version: 3, kek: kek)
        #expect(binding.secretID.uuidString.dropFirst(14).first == "4", "row ids are version 4 UUIDs")
        #expect(try Envelope.open(sealed, binding: binding, kek: kek).constantTimeEquals(message))
    }

    @Test("a canary opens only under its own key")
    func canary() throws {
        let canary = Canary.make(kek)
        #expect(Canary.verify(canary, kek: kek))
        let impostor = try MasterKey.generate(id: kek.id)
        let other = try MasterKey.generate(id: "other")
        #expect(!Canary.verify(canary, kek: impostor))
        #expect(!Canary.verify(canary, kek: other))
        var flipped = canary
        flipped[flipped.startIndex + 20] ^= 1
        #expect(!Canary.verify(flipped, kek: kek))
    }
}

@Suite("Associated data")
struct AssociatedDataTests {
    @Test("the row binding and the data-key binding are exactly the strings of SPEC §4")
    func format() {
        let secret = UUID(uuidString: "0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9")!
        let integration = UUID(uuidString: "11111111-2222-3333-4444-555555555555")!
        let owner = UUID(uuidString: "ABCDEFAB-CDEF-ABCD-EFAB-CDEFABCDEFAB")!
        let binding = SecretBinding(secretID: secret, integrationID: integration, ownerID: owner, version: 12)
        #expect(
            binding.withAssociatedData { String(decoding: $0, as: UTF8.self) }
                == "keyhaven:v1|0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9|11111111-2222-3333-4444-555555555555|"
                + "abcdefab-cdef-abcd-efab-cdefabcdefab|12"
        )
        #expect(
            Envelope.withDEKAssociatedData(secretID: secret, kekID: "kek-1") { String(decoding: $0, as: UTF8.self) }
                == "keyhaven:dek:v1|0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9|kek-1")
    }
}
