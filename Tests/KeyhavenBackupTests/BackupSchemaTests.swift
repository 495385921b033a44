import Foundation
import KeyhavenBackup
import KeyhavenTestSupport
import SQLKit
import Testing

/// A migration that adds a table or a column must add it to the backup too, or backups would silently drop it.
@Suite("The backup schema")
struct BackupSchemaTests {
    @Test("the backup lists every table and column of the migrated database", arguments: TestDatabase.all)
    func coversSchema(kind: TestDatabase) async throws {
        let handle = try await kind.make()
        let (tables, columns) = try await handle.database.withConnection { sql in
            var columns: [String: Set<String>] = [:]
            let tables: [String]
            switch kind {
            case .sqlite:
                tables = try await sql.raw(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
                .all().map { try $0.decode(column: "name", as: String.self) }
                for table in tables {
                    columns[table] = Set(
                        try await sql.raw("SELECT name FROM pragma_table_info(\(bind: table))").all()
                            .map { try $0.decode(column: "name", as: String.self) })
                }
            case .postgres:
                tables = try await sql.raw(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                ).all().map { try $0.decode(column: "table_name", as: String.self) }
                for table in tables {
                    columns[table] = Set(
                        try await sql.raw(
                            """
                            SELECT column_name FROM information_schema.columns
                            WHERE table_schema = current_schema() AND table_name = \(bind: table)
                            """
                        ).all().map { try $0.decode(column: "column_name", as: String.self) })
                }
            }
            return (tables, columns)
        }
        #expect(Set(tables) == Set(BackupSchema.tables.map(\.name)).union(BackupSchema.excluded))
        for table in BackupSchema.tables {
            #expect(columns[table.name] == Set(table.columns.map(\.name)), "\(table.name)")
            #expect(table.columns.contains { $0.name == table.key }, "\(table.name) pages by a listed column")
        }
        await handle.close()
    }
}
