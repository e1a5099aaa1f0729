import Foundation
import MTASTSCore
import Storage
import Testing

@Suite struct SQLiteTests {
    func database() throws -> SQLDatabase {
        try SQLDatabase(sqlite: FileManager.default.temporaryDirectory.appendingPathComponent("storage-\(UUID().uuidString.prefix(8)).db").path)
    }

    @Test("migrations run once, in order; values round-trip") func migrations() throws {
        let db = try database()
        let steps: [(version: Int, sql: [String])] = [
            (1, ["CREATE TABLE t (id \(db.serialKey), name TEXT NOT NULL, score \(db.realType), data \(db.blobType))"]),
            (2, ["CREATE INDEX t_name ON t (name)"]),
        ]
        try db.migrate(component: "test", steps)
        try db.migrate(component: "test", steps)
        try db.query("INSERT INTO t (name, score, data) VALUES (?, ?, ?)", [.text("a'b; DROP TABLE t"), .real(1.5), .blob([0, 255, 10])])
        let rows = try db.query("SELECT name, score, data FROM t WHERE name = ?", [.text("a'b; DROP TABLE t")])
        #expect(rows.count == 1)
        #expect(rows[0][0].string == "a'b; DROP TABLE t")
        #expect(rows[0][1].double == 1.5)
        #expect(rows[0][2].bytes == [0, 255, 10])
    }

    @Test("a failing transaction leaves nothing; errors are temporary storage errors") func transactions() throws {
        let db = try database()
        try db.query("CREATE TABLE t (k TEXT PRIMARY KEY)")
        struct Abort: Error {}
        #expect(throws: Abort.self) {
            try db.transaction {
                try db.query("INSERT INTO t (k) VALUES (?)", [.text("x")])
                throw Abort()
            }
        }
        #expect(try db.query("SELECT count(*) FROM t")[0][0].int == 0)
        do {
            try db.query("SELECT * FROM missing")
            Issue.record("no error")
        } catch {
            #expect(error.mtastsError.code == .storage)
            #expect(error.mtastsError.temporary)
        }
    }
}
