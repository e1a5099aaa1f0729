import Foundation

/// SQLite or PostgreSQL behind one interface. Statements are written once with `?` parameters;
/// PostgreSQL gets `$1…`. `ON CONFLICT … DO UPDATE/NOTHING` and `RETURNING` work on both.
public final class SQLDatabase: @unchecked Sendable {
    public enum Kind: String, Sendable { case sqlite, postgres }

    public let kind: Kind
    /// Where the data is, without a password (for messages and logs).
    public let location: String
    private let run: (String, [SQLValue]) throws(StorageError) -> [[SQLValue]]
    private let lock = NSRecursiveLock()
    private var numbered: [String: String] = [:]

    /// Opens a database named by a URL: `postgres://…`, `postgresql://…` or a libpq `key=value`
    /// string selects PostgreSQL; `sqlite:PATH`, `sqlite://PATH` or a plain path selects SQLite.
    public convenience init(url: String, timeout: Duration = .seconds(5)) throws(StorageError) {
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") || url.range(of: #"^\s*\w+\s*=\s*"#, options: .regularExpression) != nil {
            try self.init(postgres: url, timeout: timeout)
        } else {
            var path = url
            if path.hasPrefix("sqlite://") { path.removeFirst(9) } else if path.hasPrefix("sqlite:") { path.removeFirst(7) }
            try self.init(sqlite: path, timeout: timeout)
        }
    }

    /// PostgreSQL through libpq: a URI or a `key=value` connection string.
    /// With `connectNow: false` the connection is opened by the first statement (and again after
    /// it is lost), so a server that is down at start is not an error yet.
    public init(postgres dsn: String, timeout: Duration = .seconds(5), connectNow: Bool = true) throws(StorageError) {
        let db = try PostgresDatabase(dsn: dsn, statementTimeout: timeout, connectNow: connectNow)
        kind = .postgres
        location = PostgresDatabase.redact(dsn)
        run = { (sql, parameters) throws(StorageError) in try db.query(sql, parameters) }
    }

    /// An SQLite file (created with its directory when missing).
    public init(sqlite path: String, timeout: Duration = .seconds(5)) throws(StorageError) {
        guard !path.isEmpty else { throw StorageError("the SQLite database needs a file path") }
        let db = try SQLiteDatabase(path: path, busyTimeout: timeout)
        kind = .sqlite
        location = path
        run = { (sql, parameters) throws(StorageError) in try db.query(sql, parameters) }
    }

    /// Column types that differ between the two.
    public var realType: String { kind == .sqlite ? "REAL" : "DOUBLE PRECISION" }
    /// A sum over rows that cannot fail on overflow: SQLite's TOTAL (a float; SUM raises "integer
    /// overflow"), PostgreSQL's SUM (numeric for bigint). Read it with `SQLValue.int`, which
    /// saturates.
    public var sum: String { kind == .sqlite ? "TOTAL" : "SUM" }
    public var blobType: String { kind == .sqlite ? "BLOB" : "BYTEA" }
    public var serialKey: String { kind == .sqlite ? "INTEGER PRIMARY KEY" : "BIGSERIAL PRIMARY KEY" }

    /// Runs one statement with `?` parameters; returns its rows.
    @discardableResult
    public func query(_ sql: String, _ parameters: [SQLValue] = []) throws(StorageError) -> [[SQLValue]] {
        lock.lock()
        defer { lock.unlock() }
        return try run(text(sql), parameters)
    }

    /// Runs `body` in one transaction; rolls back when it throws. Other threads wait.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        try run("BEGIN", [])
        do {
            let value = try body()
            try run("COMMIT", [])
            return value
        } catch {
            _ = try? run("ROLLBACK", [])
            throw error
        }
    }

    private func text(_ sql: String) -> String {
        guard kind == .postgres else { return sql }
        if let done = numbered[sql] { return done }
        var n = 0
        var out = ""
        var quoted = false
        for c in sql {
            if c == "'" { quoted.toggle() }
            if c == "?" && !quoted {
                n += 1
                out += "$\(n)"
            } else {
                out.append(c)
            }
        }
        numbered[sql] = out
        return out
    }

    /// Applies the numbered migrations not yet applied, each in its own transaction, and records
    /// them in `schema_migrations` under `component`. Several processes starting at once: the
    /// loser of a race sees the version as applied and goes on.
    public func migrate(component: String, _ steps: [(version: Int, sql: [String])]) throws(StorageError) {
        do {
            try query("CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, applied_at \(realType) NOT NULL, PRIMARY KEY (component, version))")
        } catch {
            _ = try query("SELECT 1 FROM schema_migrations LIMIT 1")
        }
        let applied = Set(try query("SELECT version FROM schema_migrations WHERE component = ?", [.text(component)]).compactMap { $0.first?.int })
        for step in steps where !applied.contains(Int64(step.version)) {
            do {
                try transaction {
                    for statement in step.sql { try self.query(statement) }
                    try self.query("INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)",
                                   [.text(component), .integer(Int64(step.version)), .real(Date().timeIntervalSince1970)])
                }
            } catch {
                let again = try query("SELECT 1 FROM schema_migrations WHERE component = ? AND version = ?", [.text(component), .integer(Int64(step.version))])
                if again.isEmpty { throw StorageError("migration \(component) \(step.version) failed: \(error)") }
            }
        }
    }
}
