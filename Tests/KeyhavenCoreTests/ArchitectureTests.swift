import Foundation
import Testing

/// `docs/architecture.md` is the map of the modules; this keeps `Package.swift` and every `import` inside it.
@Suite("Architecture")
struct ArchitectureTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// A target of `Package.swift`: its sources' folder and what it declares it depends on.
    struct Target: Equatable {
        var name: String
        var isTest: Bool
        var path: String
        var modules: Set<String>  // the package's own targets
        var products: Set<String>  // other packages' products (each one module of the same name)
    }

    /// What the map allows a module; nil means anything.
    struct Row: Equatable {
        var modules: Set<String>?
        var packages: Set<String>?
    }

    /// Modules of the toolchain and the system, which no target declares.
    static let system: Set<String> = [
        "Foundation", "FoundationEssentials", "FoundationNetworking", "Glibc", "Musl", "Darwin", "Dispatch",
        "Synchronization", "Testing", "XCTest", "_Concurrency",
    ]

    /// The targets of a `Package.swift` text.
    static func targets(in manifest: String) throws -> [Target] {
        let opener = try Regex(#"\.(target|executableTarget|testTarget)\("#)
        let starts = manifest.ranges(of: opener)
        return try starts.indices.map { index in
            let end = index + 1 < starts.count ? starts[index + 1].lowerBound : manifest.endIndex
            let block = String(manifest[starts[index].lowerBound..<end])
            let name = try #require(firstCapture(#"name:\s*"([^"]+)""#, in: block))
            var modules = Set<String>()
            var products = Set<String>()
            if let open = block.range(of: "dependencies: [") {
                var depth = 1
                var cursor = open.upperBound
                while depth > 0, cursor < block.endIndex {
                    if block[cursor] == "[" { depth += 1 } else if block[cursor] == "]" { depth -= 1 }
                    cursor = block.index(after: cursor)
                }
                var list = String(block[open.upperBound..<cursor])
                for product in list.matches(of: try Regex(#"\.product\(\s*name:\s*"([^"]+)"[^)]*\)"#)) {
                    products.insert(String(try #require(product.output[1].substring)))
                }
                list = list.replacing(try Regex(#"\.product\([^)]*\)"#), with: "")
                for literal in list.matches(of: try Regex(#""([^"]+)""#)) {
                    modules.insert(String(try #require(literal.output[1].substring)))
                }
            }
            let isTest = block.hasPrefix(".testTarget(")
            let path = firstCapture(#"path:\s*"([^"]+)""#, in: block) ?? (isTest ? "Tests/" : "Sources/") + name
            return Target(name: name, isTest: isTest, path: path, modules: modules, products: products)
        }
    }

    /// The rows of the map's table: module → what it may depend on.
    static func rows(in map: String) throws -> [String: Row] {
        var rows: [String: Row] = [:]
        for line in map.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard cells.count >= 5, let module = names(in: cells[1]).first,
                module.hasPrefix("Keyhaven")
                    || module.hasPrefix("keyhaven")
            else { continue }
            func allowed(_ cell: String) -> Set<String>? { cell == "*" ? nil : names(in: cell) }
            rows[module] = Row(modules: allowed(cells[3]), packages: allowed(cells[4]))
        }
        return rows
    }

    /// Every module a Swift source imports.
    static func imports(in source: String) throws -> Set<String> {
        let statement = try Regex(
            #"(?m)^\s*(?:@[A-Za-z_]+(?:\([^)]*\))?\s+)*import\s+(?:(?:"#
                + #"struct|class|enum|protocol|func|var|let|typealias)\s+)?([A-Za-z_][A-Za-z0-9_]*)"#
        )
        return Set(try source.matches(of: statement).map { String(try #require($0.output[1].substring)) })
    }

    /// What is wrong between a manifest, the map and the sources (`sources`: target name → the imports of its files).
    static func violations(targets: [Target], rows: [String: Row], imports: [String: Set<String>]) -> [String] {
        var found: [String] = []
        let names = Set(targets.map(\.name))
        for stale in Set(rows.keys).subtracting(names).sorted() {
            found.append("the map names \(stale), which Package.swift does not have")
        }
        for target in targets {
            if !target.isTest {
                guard let row = rows[target.name] else {
                    found.append("\(target.name) has no row in docs/architecture.md")
                    continue
                }
                if let allowed = row.modules {
                    for module in target.modules.subtracting(allowed).sorted() {
                        found.append("\(target.name) depends on \(module), which the map does not allow")
                    }
                }
                if let allowed = row.packages {
                    for product in target.products.subtracting(allowed).sorted() {
                        found.append(
                            "\(target.name) depends on the package product \(product), which the map does not allow")
                    }
                }
            }
            let declared = target.modules.union(target.products).union(system).union([target.name])
            for module in (imports[target.name] ?? []).subtracting(declared).sorted() {
                found.append("\(target.name) imports \(module) without declaring it in Package.swift")
            }
        }
        return found
    }

    static func firstCapture(_ pattern: String, in text: String) -> String? {
        guard let regex = try? Regex(pattern), let match = text.firstMatch(of: regex) else { return nil }
        return match.output[1].substring.map(String.init)
    }

    static func names(in cell: String) -> Set<String> {
        Set(cell.matches(of: /`([^`]+)`/).map { String($0.output.1) })
    }

    static func sourceImports(of targets: [Target]) throws -> [String: Set<String>] {
        var found: [String: Set<String>] = [:]
        for target in targets {
            let folder = root.appendingPathComponent(target.path)
            guard let files = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: nil) else {
                continue
            }
            for case let file as URL in files where file.pathExtension == "swift" {
                found[target.name, default: []].formUnion(try imports(in: String(contentsOf: file, encoding: .utf8)))
            }
        }
        return found
    }

    @Test("Package.swift, docs/architecture.md and every import agree")
    func mapHolds() throws {
        let manifest = try String(contentsOf: Self.root.appendingPathComponent("Package.swift"), encoding: .utf8)
        let map = try String(contentsOf: Self.root.appendingPathComponent("docs/architecture.md"), encoding: .utf8)
        let targets = try Self.targets(in: manifest)
        let rows = try Self.rows(in: map)
        #expect(targets.count >= 20, "the manifest was read")
        #expect(rows.count >= 15, "the map was read")
        let imports = try Self.sourceImports(of: targets)
        #expect(imports["KeyhavenCore"]?.contains("Foundation") == true, "the sources were read")
        #expect(Self.violations(targets: targets, rows: rows, imports: imports) == [])
        // What the layering promises, whatever the map says today.
        let core = try #require(targets.first { $0.name == "KeyhavenCore" })
        #expect(core.modules.isEmpty && core.products.isEmpty)
        for name in ["KeyhavenServices", "KeyhavenWeb", "KeyhavenPages"] {
            let target = try #require(targets.first { $0.name == name })
            #expect(target.modules.isDisjoint(with: ["KeyhavenStorage", "KeyhavenDatabase", "KeyhavenApp"]), "\(name)")
            #expect(target.products.isDisjoint(with: ["SQLKit", "SQLiteKit", "PostgresKit"]), "\(name)")
        }
    }

    @Test("a forbidden dependency, an undeclared import and a module without a row are each reported")
    func violationsAreFound() throws {
        let manifest = """
            .target(name: "KeyhavenCore", resources: [.copy("Resources")]),
            .target(
                name: "KeyhavenServices",
                dependencies: ["KeyhavenCore", "KeyhavenStorage", .product(name: "SQLKit", package: "sql-kit")]
            ),
            .target(name: "KeyhavenNew", dependencies: ["KeyhavenCore"]),
            .testTarget(name: "KeyhavenCoreTests", dependencies: ["KeyhavenCore"]),
            """
        let map = """
            | Module | Holds | Project modules | Packages |
            |---|---|---|---|
            | `KeyhavenCore` | types | — | — |
            | `KeyhavenServices` | decisions | `KeyhavenCore` | `Crypto` |
            """
        let targets = try Self.targets(in: manifest)
        #expect(targets.map(\.name) == ["KeyhavenCore", "KeyhavenServices", "KeyhavenNew", "KeyhavenCoreTests"])
        #expect(targets[1].modules == ["KeyhavenCore", "KeyhavenStorage"] && targets[1].products == ["SQLKit"])
        let imports = [
            "KeyhavenCore": try Self.imports(
                in: "import Foundation\n@preconcurrency import struct NIOCore.ByteBuffer\n"),
            "KeyhavenCoreTests": try Self.imports(in: "@testable import KeyhavenCore\nimport Testing\n"),
        ]
        #expect(imports["KeyhavenCore"] == ["Foundation", "NIOCore"])
        let found = Self.violations(targets: targets, rows: try Self.rows(in: map), imports: imports)
        #expect(
            Set(found) == [
                "KeyhavenCore imports NIOCore without declaring it in Package.swift",
                "KeyhavenServices depends on KeyhavenStorage, which the map does not allow",
                "KeyhavenServices depends on the package product SQLKit, which the map does not allow",
                "KeyhavenNew has no row in docs/architecture.md",
            ])
    }
}
