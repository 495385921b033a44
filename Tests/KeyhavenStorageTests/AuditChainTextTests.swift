import Foundation
import KeyhavenCore
import Testing

@testable import KeyhavenStorage

@Suite("Audit chain text")
struct AuditChainTextTests {
    @Test("the bytes written field by field are the canonical text stored chains were hashed over")
    func sameBytes() {
        let texts = [
            "", "plain", "quote \" backslash \\ slash /", "line\nfeed\ttab\u{01}\u{1F}", "ñandú 🔑 \u{7F}",
            #"{"credential_version":2}"#,
        ]
        var count = 0
        for (index, text) in texts.enumerated() {
            for present in [true, false] {
                let event = AuditEvent(
                    seq: Int64(index * 1_000_003), id: UUID(), at: Date().timestampText, actorType: text,
                    actorID: present ? text : nil, ownerID: present ? UUID() : nil, action: "credentials.read",
                    integrationID: present ? UUID() : nil, outcome: text, ip: present ? "203.0.113.\(index)" : nil,
                    userAgent: present ? text : nil, detail: text, prevHash: String(repeating: "ab", count: 32),
                    hash: "", keyID: present ? "audit-\(index)" : nil)
                #expect(SQLAuditLog.chainedBytes(event) == Array(SQLAuditLog.chainedText(event).utf8), "\(text)")
                count += 1
            }
        }
        #expect(count == texts.count * 2)
    }
}
