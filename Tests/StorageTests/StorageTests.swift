import Foundation
import MTASTSCore
import Storage
import Synchronization
import Testing
import TestSupport

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

    @Test("text is bound by byte length: a NUL survives, an empty string stays empty; a new database file is 0640 (hostile input)")
    func nulAndFileMode() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("storage-\(UUID().uuidString.prefix(8)).db").path
        let old = umask(0)
        defer { umask(old) }
        let db = try SQLDatabase(sqlite: path)
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o640)
        try db.query("CREATE TABLE t (k TEXT)")
        for text in ["a\u{0}b\u{0}", "", "é\u{0}"] {
            try db.query("DELETE FROM t")
            try db.query("INSERT INTO t (k) VALUES (?)", [.text(text)])
            let rows = try db.query("SELECT k, length(CAST(k AS BLOB)) FROM t WHERE k = ?", [.text(text)])
            #expect(rows.first?[0].string == text)
            #expect(rows.first?[1].int == Int64(text.utf8.count))
        }
    }

    @Test("connections opening one new file at once (a daemon and a cron job started together) all open it and migrate it; none gets 'database is locked' (faults)")
    func concurrentFirstOpen() throws {
        let steps: [(version: Int, sql: [String])] = [
            (1, ["CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"]),
            (2, ["CREATE INDEX t_name ON t (name)"]),
        ]
        let failures = Mutex<[String]>([])
        for _ in 0..<25 {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("storage-race-\(UUID().uuidString.prefix(8)).db").path
            defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
            DispatchQueue.concurrentPerform(iterations: 4) { i in
                do {
                    let db = try SQLDatabase(sqlite: path)
                    try db.migrate(component: "race", steps)
                    try db.query("INSERT INTO t (name) VALUES (?)", [.text("connection \(i)")])
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
            let rows = try SQLDatabase(sqlite: path).query("SELECT count(*) FROM t")
            #expect(rows.first?.first?.int == 4)
        }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 }.prefix(3))")
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

@Suite struct PostgresTransactionTests {
    @Test("a PostgreSQL connection lost inside a transaction fails the transaction: no statement is retried outside it, nothing is half-committed (hostile input, faults)")
    func noRetryInsideATransaction() throws {
        let pg = try PostgresServer()
        defer { pg.stop() }
        let db = try SQLDatabase(postgres: pg.dsn)
        let killer = try SQLDatabase(postgres: pg.dsn)
        try db.query("CREATE TABLE t (k TEXT PRIMARY KEY)")
        #expect(throws: StorageError.self) {
            try db.transaction {
                try db.query("INSERT INTO t (k) VALUES (?)", [.text("a")])
                let pid = try #require(try db.query("SELECT pg_backend_pid()").first?[0].int)
                try killer.query("SELECT pg_terminate_backend(?::int)", [.integer(pid)])
                try db.query("INSERT INTO t (k) VALUES (?)", [.text("b")])
                try db.query("INSERT INTO t (k) VALUES (?)", [.text("c")])
            }
        }
        // The next statement reconnects; the whole batch is gone, to be retried from the start.
        #expect(try db.query("SELECT count(*) FROM t").first?[0].int == 0)
        try db.transaction {
            for k in ["a", "b", "c"] { try db.query("INSERT INTO t (k) VALUES (?)", [.text(k)]) }
        }
        #expect(try db.query("SELECT count(*) FROM t").first?[0].int == 3)
    }
}
