import Foundation
import KeyhavenCore
import PostgresKit

/// Where the data lives: an SQLite file (the default) or a PostgreSQL server.
public enum DatabaseLocation: Sendable, Equatable {
    /// An SQLite database file, created with its folder if missing.
    case sqlite(path: String)
    /// A PostgreSQL server, by connection URL. The URL may hold a password, so it is never printed.
    case postgres(url: String)

    /// The default: `sqlite://./data/keyhaven.sqlite`.
    public static let defaultURL = "sqlite://./data/keyhaven.sqlite"

    /// Parses `sqlite://<path>` (relative or, with a third slash, absolute) or `postgres://…` / `postgresql://…`.
    ///
    /// - Throws: `KeyhavenError.configuration` naming `KEYHAVEN_DATABASE_URL` if the URL is neither.
    public init(url: String) throws {
        if url.hasPrefix("sqlite://") {
            let path = String(url.dropFirst("sqlite://".count))
            guard !path.isEmpty else {
                throw KeyhavenError.configuration("KEYHAVEN_DATABASE_URL: sqlite:// needs a file path")
            }
            self = .sqlite(path: path)
        } else if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            guard (try? SQLPostgresConfiguration(url: url)) != nil else {
                throw KeyhavenError.configuration("KEYHAVEN_DATABASE_URL is not a valid PostgreSQL URL")
            }
            self = .postgres(url: url)
        } else {
            throw KeyhavenError.configuration(
                "KEYHAVEN_DATABASE_URL must start with sqlite:// or postgres:// (for example \(Self.defaultURL))")
        }
    }

    /// The SQLite file, if this is SQLite.
    public var sqlitePath: String? {
        if case .sqlite(let path) = self { path } else { nil }
    }
}

extension DatabaseLocation: CustomStringConvertible {
    /// The location without any password: `sqlite://<path>` or `postgres://user@host:port/db`.
    public var description: String {
        switch self {
        case .sqlite(let path):
            return "sqlite://\(path)"
        case .postgres(let url):
            guard let components = URLComponents(string: url) else { return "postgres://<invalid>" }
            let user = components.user.map { "\($0)@" } ?? ""
            let port = components.port.map { ":\($0)" } ?? ""
            return "postgres://\(user)\(components.host ?? "")\(port)\(components.path)"
        }
    }
}

/// The two SQL dialects Keyhaven speaks.
public enum DatabaseKind: String, Sendable {
    /// SQLite, through its C API.
    case sqlite
    /// PostgreSQL, through PostgresKit.
    case postgres
}
