import Crypto
import Foundation
import KeyhavenCore

/// The stored hashes of random tokens (``RandomToken``).
enum TokenMaterial {
    /// SHA-256 of the token, hex: what the database stores and looks up.
    static func hash(_ token: String) -> String {
        Hex.encode(SHA256.hash(data: Data(token.utf8)))
    }
}
