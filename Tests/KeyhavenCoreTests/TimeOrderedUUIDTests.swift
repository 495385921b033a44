import Foundation
import KeyhavenCore
import Testing

@Suite("Time-ordered ids")
struct TimeOrderedUUIDTests {
    @Test("version 7 ids carry their millisecond, sort in time order, and differ within one millisecond")
    func ordered() {
        let start = Date(timeIntervalSince1970: 1_800_000_000.123)
        let ids = (0..<1000).map { UUID.timeOrdered(now: start.addingTimeInterval(Double($0) * 0.002)) }
        for id in ids {
            #expect(id.uuidString.dropFirst(14).first == "7", "version 7: \(id)")
            #expect("89AB".contains(id.uuidString.dropFirst(19).first ?? "x"), "RFC variant: \(id)")
        }
        let texts = ids.map(\.uuidString)
        #expect(texts == texts.sorted(), "ids two milliseconds apart sort in time order")
        #expect(ids.first?.uuidString.prefix(13) == "01A3185C-507B", "the time in the first 48 bits")
        let same = (0..<1000).map { _ in UUID.timeOrdered(now: start) }
        #expect(Set(same).count == 1000)
    }
}
