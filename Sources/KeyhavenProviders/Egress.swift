import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// Which endpoints verification may call (SPEC §7). An operator's override or a provider's default is always
/// used; a user-supplied endpoint (a service account's `token_uri`) only over https on the provider's own hosts.
/// Loopback, private, link-local, metadata and IPv6 transition addresses are refused, checked on the resolved
/// address, which is then the one connected to (no second lookup). `allowPrivate` relaxes the address check for
/// operator-configured endpoints only.
public struct EgressPolicy: Sendable {
    /// Whether operator-configured endpoints may be on private addresses (`KEYHAVEN_EGRESS_ALLOW_PRIVATE`).
    public var allowPrivate: Bool

    /// Creates the policy.
    public init(allowPrivate: Bool) {
        self.allowPrivate = allowPrivate
    }

    /// Why an endpoint is not called.
    public enum Refusal: Error, Sendable, Equatable {
        /// The host resolves to an address the policy refuses.
        case privateAddress(String)
        /// The host did not resolve.
        case unresolvable(String)
    }

    /// Where an endpoint is, who chose it.
    public enum Origin: Sendable {
        /// The provider's default or the operator's override.
        case operatorConfigured
        /// A value from the user's own input.
        case userSupplied
    }

    /// Whether a user-supplied URL may be used for a provider whose endpoints live on `allowedHosts`: https, on
    /// one of those hosts, on the default port. `allowPrivate` does not change this.
    public func acceptsUserEndpoint(_ url: URL, allowedHosts: Set<String>) -> Bool {
        guard let host = url.host?.lowercased(), url.scheme == "https", url.user == nil, url.password == nil else {
            return false
        }
        return allowedHosts.contains(host) && (url.port == nil || url.port == 443)
    }

    /// Resolves `url`'s host once and returns the address to connect to: an IPv4 address when the name has one
    /// (a machine without an IPv6 route would fail on an IPv6 address), else the first IPv6 address.
    ///
    /// - Throws: ``Refusal/unresolvable(_:)`` if the name does not resolve, ``Refusal/privateAddress(_:)`` if
    ///   any address it resolves to is refused for this origin.
    public func address(for url: URL, origin: Origin) async throws -> String {
        guard let host = url.host, !host.isEmpty else { throw Refusal.unresolvable("") }
        let addresses = try await Self.resolve(host)
        guard let first = addresses.first else { throw Refusal.unresolvable(host) }
        let relaxed = allowPrivate && origin == .operatorConfigured
        if !relaxed, addresses.contains(where: Self.isPrivate) { throw Refusal.privateAddress(host) }
        return Self.text(addresses.first { $0.count == 4 } ?? first)
    }

    /// The addresses `host` resolves to (an IP literal resolves to itself), as raw bytes.
    static func resolve(_ host: String) async throws -> [[UInt8]] {
        let trimmed = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if let literal = parseLiteral(trimmed) { return [literal] }
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

    /// The bytes of an IPv4 or IPv6 literal, or nil if `text` is not one.
    public static func parseLiteral(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// The text form of an address (`192.0.2.1`, `2001:db8::1`).
    static func text(_ address: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = address.count == 4 ? AF_INET : AF_INET6
        let ok = address.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        return ok ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
    }

    /// Loopback, private, shared, link-local (cloud metadata), unspecified, multicast and reserved ranges, and the
    /// IPv6 forms that embed an IPv4 address or tunnel to one (IPv4-mapped and -compatible, NAT64, 6to4, Teredo).
    static func isPrivate(_ address: [UInt8]) -> Bool {
        if address.count == 4 {
            let (a, b) = (address[0], address[1])
            return a == 0 || a == 10 || a == 127 || (a == 100 && (64...127).contains(b)) || (a == 169 && b == 254)
                || (a == 172 && (16...31).contains(b)) || (a == 192 && b == 168)
                || (a == 192 && b == 0 && address[2] == 0)
                || (a == 198 && (18...19).contains(b)) || a >= 224
        }
        guard address.count == 16 else { return true }
        if address[0..<10].allSatisfy({ $0 == 0 }) && address[10] == 0xFF && address[11] == 0xFF {
            return isPrivate(Array(address[12..<16]))  // IPv4-mapped
        }
        if address[0..<12].allSatisfy({ $0 == 0 }) { return true }  // ::, ::1 and IPv4-compatible ::/96
        let nat64 = address[0..<4] == [0x00, 0x64, 0xFF, 0x9B]  // 64:ff9b::/96 and 64:ff9b:1::/48
        let sixToFour = address[0] == 0x20 && address[1] == 0x02  // 2002::/16
        let teredo = address[0..<4] == [0x20, 0x01, 0x00, 0x00]  // 2001::/32
        return nat64 || sixToFour || teredo
            || (address[0] & 0xFE) == 0xFC  // fc00::/7 unique local (includes fd00:ec2::254)
            || (address[0] == 0xFE && (address[1] & 0xC0) == 0x80)  // fe80::/10 link-local
            || address[0] == 0xFF  // multicast
    }
}
