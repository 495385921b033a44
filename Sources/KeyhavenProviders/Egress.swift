import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Which endpoints verification may call (SPEC §7): an operator's override or a provider's default always; a
/// user-supplied endpoint only when its host is on the provider's allow-list. Loopback, private, link-local and
/// metadata addresses are refused (checked on every resolved address) unless private egress is allowed.
public struct EgressPolicy: Sendable {
    public var allowPrivate: Bool

    public init(allowPrivate: Bool) {
        self.allowPrivate = allowPrivate
    }

    public enum Refusal: Error, Sendable, Equatable {
        case hostNotAllowed(String)
        case privateAddress(String)
        case unresolvable(String)
    }

    /// Whether a user-supplied URL may be used for a provider whose endpoints live on `allowedHosts`.
    public func acceptsUserEndpoint(_ url: URL, allowedHosts: Set<String>) -> Bool {
        guard let host = url.host?.lowercased() else { return false }
        if allowedHosts.contains(host) && url.scheme == "https" { return true }
        // With private egress allowed (development and tests), local endpoints may stand in for the provider.
        return allowPrivate && ["http", "https"].contains(url.scheme ?? "")
    }

    /// Resolves `url`'s host and refuses it if any address is private (unless allowed).
    public func check(_ url: URL) async throws {
        guard let host = url.host, !host.isEmpty else { throw Refusal.unresolvable("") }
        if allowPrivate { return }
        let addresses = try await Self.resolve(host)
        guard !addresses.isEmpty else { throw Refusal.unresolvable(host) }
        for address in addresses where Self.isPrivate(address) {
            throw Refusal.privateAddress(host)
        }
    }

    static func resolve(_ host: String) async throws -> [[UInt8]] {
        let trimmed = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var result: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(trimmed, nil, &hints, &result) == 0, let first = result else { return [] }
            defer { freeaddrinfo(first) }
            var addresses: [[UInt8]] = []
            var cursor: UnsafeMutablePointer<addrinfo>? = first
            while let info = cursor {
                if info.pointee.ai_family == AF_INET, let raw = info.pointee.ai_addr {
                    raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                        var address = pointer.pointee.sin_addr
                        addresses.append(withUnsafeBytes(of: &address) { Array($0) })
                    }
                } else if info.pointee.ai_family == AF_INET6, let raw = info.pointee.ai_addr {
                    raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                        var address = pointer.pointee.sin6_addr
                        addresses.append(withUnsafeBytes(of: &address) { Array($0) })
                    }
                }
                cursor = info.pointee.ai_next
            }
            return addresses
        }
    }

    /// Loopback, private, shared, link-local (cloud metadata), unspecified, multicast and reserved ranges.
    static func isPrivate(_ address: [UInt8]) -> Bool {
        if address.count == 4 {
            let (a, b) = (address[0], address[1])
            return a == 0 || a == 10 || a == 127 || (a == 100 && (64...127).contains(b)) || (a == 169 && b == 254)
                || (a == 172 && (16...31).contains(b)) || (a == 192 && b == 168) || (a == 192 && b == 0 && address[2] == 0)
                || (a == 198 && (18...19).contains(b)) || a >= 224
        }
        guard address.count == 16 else { return true }
        if address[0..<10].allSatisfy({ $0 == 0 }) && address[10] == 0xFF && address[11] == 0xFF {
            return isPrivate(Array(address[12..<16]))  // IPv4-mapped
        }
        if address[0..<15].allSatisfy({ $0 == 0 }) { return true }  // :: and ::1
        return (address[0] & 0xFE) == 0xFC  // fc00::/7 unique local (includes fd00:ec2::254)
            || (address[0] == 0xFE && (address[1] & 0xC0) == 0x80)  // fe80::/10 link-local
            || address[0] == 0xFF  // multicast
    }
}
