// swift-tools-version: 6.2
import PackageDescription

let package = Package(
    name: "keyhaven",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keyhaven", targets: ["keyhaven"]),
        .library(name: "KeyhavenCore", targets: ["KeyhavenCore"]),
        .library(name: "KeyhavenCrypto", targets: ["KeyhavenCrypto"]),
        .library(name: "KeyhavenDatabase", targets: ["KeyhavenDatabase"]),
        .library(name: "KeyhavenStorage", targets: ["KeyhavenStorage"]),
        .library(name: "KeyhavenBackup", targets: ["KeyhavenBackup"]),
        .library(name: "KeyhavenApp", targets: ["KeyhavenApp"]),
        .library(name: "KeyhavenClient", targets: ["KeyhavenClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/sql-kit.git", from: "3.36.0"),
        .package(url: "https://github.com/vapor/sqlite-kit.git", from: "4.5.2"),
        // Exactly this minor line: KeyhavenSQLite declares the names this SQLite build is compiled under.
        .package(url: "https://github.com/vapor/sqlite-nio.git", .upToNextMinor(from: "1.13.2")),
        .package(url: "https://github.com/vapor/postgres-kit.git", from: "2.17.0"),
        .package(url: "https://github.com/vapor/async-kit.git", from: "1.22.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.15.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/vapor/multipart-kit.git", from: "4.7.1"),
    ],
    targets: [
        .target(name: "KeyhavenCore", resources: [.copy("Resources")]),
        .target(name: "KeyhavenSQLite"),
        .target(
            name: "KeyhavenCrypto",
            dependencies: [
                "KeyhavenCore",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The database engine: connections, pools, transactions and the schema's migrations on SQLite and
        // PostgreSQL. It holds no store; SQLiteNIO is linked for the SQLite copy KeyhavenSQLite calls into.
        .target(
            name: "KeyhavenDatabase",
            dependencies: [
                "KeyhavenCore",
                "KeyhavenSQLite",
                .product(name: "AsyncKit", package: "async-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "PostgresKit", package: "postgres-kit"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "SQLiteKit", package: "sqlite-kit"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
            ]
        ),
        // The stores (repositories) over KeyhavenDatabase and the master keys' lifecycle (Keys/).
        .target(
            name: "KeyhavenStorage",
            dependencies: [
                "KeyhavenCore",
                "KeyhavenCrypto",
                "KeyhavenDatabase",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SQLKit", package: "sql-kit"),
            ]
        ),
        // Backups: the encrypted file format (Format/), the snapshot written into it, the restore into an empty
        // SQLite or PostgreSQL database, and the scheduled backups' lease.
        .target(
            name: "KeyhavenBackup",
            dependencies: [
                "KeyhavenCore",
                "KeyhavenCrypto",
                "KeyhavenDatabase",
                "KeyhavenStorage",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SQLKit", package: "sql-kit"),
            ]
        ),
        .target(
            name: "KeyhavenProviders",
            dependencies: [
                "KeyhavenCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "KeyhavenGateway",
            dependencies: [
                "KeyhavenCore",
                "KeyhavenProviders",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            resources: [.copy("Resources")]
        ),
        .target(
            name: "KeyhavenServices",
            dependencies: [
                "KeyhavenCore",
                "KeyhavenGateway",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "KeyhavenWeb",
            dependencies: [
                "KeyhavenCore",
                "KeyhavenGateway",
                "KeyhavenServices",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            ],
            resources: [.copy("Resources/openapi.json")]
        ),
        .target(
            name: "KeyhavenPages",
            dependencies: [
                "KeyhavenCore",
                "KeyhavenGateway",
                "KeyhavenServices",
                "KeyhavenWeb",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "MultipartKit", package: "multipart-kit"),
            ],
            resources: [.copy("Resources/Templates"), .copy("Resources/Public"), .copy("Resources/Localization")]
        ),
        .target(
            name: "KeyhavenClient",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "KeyhavenApp",
            dependencies: [
                "KeyhavenCore",
                "KeyhavenCrypto",
                "KeyhavenDatabase",
                "KeyhavenStorage",
                "KeyhavenBackup",
                "KeyhavenWeb",
                "KeyhavenPages",
                "KeyhavenServices",
                "KeyhavenProviders",
                "KeyhavenGateway",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "keyhaven",
            dependencies: [
                "KeyhavenApp",
                "KeyhavenBackup",
                "KeyhavenCore",
                "KeyhavenCrypto",
                "KeyhavenStorage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "keyhaven-bench",
            dependencies: [
                "KeyhavenCore", "KeyhavenCrypto", "KeyhavenDatabase", "KeyhavenStorage", "KeyhavenApp", "KeyhavenWeb",
                "KeyhavenGateway", "KeyhavenProviders", "KeyhavenServices",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Sources/KeyhavenBench"
        ),
        .executableTarget(
            name: "keyhaven-reliability",
            dependencies: [
                "KeyhavenApp", "KeyhavenBackup", "KeyhavenClient", "KeyhavenCore", "KeyhavenCrypto",
                "KeyhavenDatabase", "KeyhavenStorage",
                "KeyhavenTestSupport", "KeyhavenWeb", "KeyhavenServices",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
            ],
            path: "Sources/KeyhavenReliability"
        ),
        .executableTarget(
            name: "keyhaven-fakes",
            dependencies: ["KeyhavenCore", "KeyhavenTestSupport"],
            path: "Sources/KeyhavenFakes"
        ),
        .target(
            name: "KeyhavenTestSupport",
            dependencies: [
                "KeyhavenApp", "KeyhavenBackup", "KeyhavenCore", "KeyhavenCrypto", "KeyhavenDatabase",
                "KeyhavenProviders", "KeyhavenServices", "KeyhavenStorage", "KeyhavenWeb",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "KeyhavenCoreTests", dependencies: ["KeyhavenCore", "KeyhavenTestSupport"]),
        .testTarget(
            name: "KeyhavenCryptoTests", dependencies: ["KeyhavenCore", "KeyhavenCrypto", "KeyhavenTestSupport"]),
        .testTarget(name: "KeyhavenWebTests", dependencies: ["KeyhavenCore", "KeyhavenWeb"]),
        .testTarget(
            name: "KeyhavenPagesTests",
            dependencies: [
                "KeyhavenApp", "KeyhavenCore", "KeyhavenPages", "KeyhavenWeb", "KeyhavenTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "KeyhavenGatewayTests",
            dependencies: [
                "KeyhavenCore", "KeyhavenGateway", "KeyhavenTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .testTarget(
            name: "KeyhavenServicesTests",
            dependencies: ["KeyhavenServices", "KeyhavenCore", "KeyhavenGateway"]
        ),
        .testTarget(
            name: "KeyhavenDatabaseTests",
            dependencies: [
                "KeyhavenCore", "KeyhavenDatabase", "KeyhavenStorage", "KeyhavenTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
            ]),
        .testTarget(
            name: "KeyhavenStorageTests",
            dependencies: [
                "KeyhavenCore", "KeyhavenCrypto", "KeyhavenDatabase", "KeyhavenStorage", "KeyhavenTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SQLKit", package: "sql-kit"),
            ]),
        .testTarget(
            name: "KeyhavenBackupTests",
            dependencies: [
                "KeyhavenBackup", "KeyhavenCore", "KeyhavenCrypto", "KeyhavenTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SQLKit", package: "sql-kit"),
            ]),
        .testTarget(
            name: "KeyhavenProvidersTests",
            dependencies: [
                "KeyhavenCore", "KeyhavenProviders", "KeyhavenTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            resources: [.copy("Fixtures")]),
        .testTarget(
            name: "KeyhavenClientTests",
            dependencies: [
                "KeyhavenClient", "KeyhavenApp", "KeyhavenTestSupport",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "SQLKit", package: "sql-kit"),
            ]
        ),
        .testTarget(
            name: "KeyhavenAppTests",
            dependencies: [
                "KeyhavenApp", "KeyhavenBackup", "KeyhavenCore", "KeyhavenCrypto", "KeyhavenDatabase",
                "KeyhavenGateway", "KeyhavenPages", "KeyhavenProviders", "KeyhavenServices", "KeyhavenStorage",
                "KeyhavenTestSupport", "KeyhavenWeb",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "SQLKit", package: "sql-kit"),
            ]
        ),
    ]
)
