import CLibPQ
import Foundation

/// One PostgreSQL connection through libpq, serialised by a lock; reconnects once when the
/// server went away. Parameters are `$1…`, sent as text; results come back as text. Calls block:
/// run them off event loops.
public final class PostgresDatabase: @unchecked Sendable {
    private let dsn: String
    private let statementTimeout: Duration
    private var connection: OpaquePointer?
    private let lock = NSLock()

    /// - Parameters:
    ///   - dsn: a libpq connection string or URI (`postgres://user@%2Frun%2Fpostgresql/db`,
    ///     `host=127.0.0.1 port=5432 dbname=mtasts`).
    ///   - statementTimeout: the server cancels a statement running longer.
    public init(dsn: String, statementTimeout: Duration = .seconds(5)) throws(StorageError) {
        self.dsn = dsn
        self.statementTimeout = statementTimeout
        lock.lock()
        defer { lock.unlock() }
        try connect()
    }

    deinit { PQfinish(connection) }

    private func connect() throws(StorageError) {
        PQfinish(connection)
        connection = PQconnectdb(dsn)
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            let message = connection.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            throw StorageError("cannot connect to PostgreSQL (\(Self.redact(dsn))): \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        let ms = statementTimeout.components.seconds * 1000
        _ = try run("SET statement_timeout = \(ms)", [])
    }

    /// Runs one statement (or, without parameters, several separated by `;`); returns its rows.
    @discardableResult
    public func query(_ sql: String, _ parameters: [SQLValue] = []) throws(StorageError) -> [[SQLValue]] {
        lock.lock()
        defer { lock.unlock() }
        let verb = sql.prefix(8).uppercased()
        if verb.hasPrefix("COMMIT") || verb.hasPrefix("ROLLBACK") {
            defer { inTransaction = false }
            return try run(sql, parameters)
        }
        if connection == nil || PQstatus(connection) != CONNECTION_OK {
            // A statement is never retried outside the transaction it belonged to: the server has
            // rolled the transaction back with the connection, so the caller must start again.
            guard !inTransaction else {
                inTransaction = false
                throw StorageError("the PostgreSQL connection was lost inside a transaction (rolled back; try again)")
            }
            try connect()
        }
        do {
            let rows = try run(sql, parameters)
            if verb.hasPrefix("BEGIN") { inTransaction = true }
            return rows
        } catch {
            // The server may have restarted: reconnect once and retry, outside a transaction only.
            guard PQstatus(connection) != CONNECTION_OK else { throw error }
            if inTransaction {
                inTransaction = false
                throw StorageError("the PostgreSQL connection was lost inside a transaction (rolled back; try again): \(error)")
            }
            try connect()
            let rows = try run(sql, parameters)
            if verb.hasPrefix("BEGIN") { inTransaction = true }
            return rows
        }
    }

    /// A BEGIN has been run and neither COMMIT nor ROLLBACK since (guarded by `lock`).
    private var inTransaction = false

    private func run(_ sql: String, _ parameters: [SQLValue]) throws(StorageError) -> [[SQLValue]] {
        let texts: [String?] = parameters.map { $0.postgresText }
        let result: OpaquePointer?
        if texts.isEmpty {
            result = PQexec(connection, sql)
        } else {
            var cStrings: [UnsafeMutablePointer<CChar>?] = texts.map { $0.flatMap { strdup($0) } }
            defer { cStrings.forEach { free($0) } }
            result = cStrings.withUnsafeMutableBufferPointer { buffer in
                buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { values in
                    PQexecParams(connection, sql, Int32(texts.count), nil, values.baseAddress, nil, nil, 0)
                }
            }
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
            let message = result.map { String(cString: PQresultErrorMessage($0)) } ?? String(cString: PQerrorMessage(connection))
            throw StorageError("PostgreSQL: \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        let rowCount = PQntuples(result)
        let columnCount = PQnfields(result)
        var rows: [[SQLValue]] = []
        rows.reserveCapacity(Int(rowCount))
        for r in 0..<rowCount {
            var row: [SQLValue] = []
            for c in 0..<columnCount {
                row.append(PQgetisnull(result, r, c) == 1 ? .null : .text(String(cString: PQgetvalue(result, r, c))))
            }
            rows.append(row)
        }
        return rows
    }

    /// The DSN without its password, for messages.
    static func redact(_ dsn: String) -> String {
        var text = dsn
        if let range = text.range(of: #"://[^/@:]*:[^@/]*@"#, options: .regularExpression) {
            let userEnd = text[range].dropFirst(3).firstIndex(of: ":")!
            text.replaceSubrange(userEnd..<text.index(before: range.upperBound), with: ":***")
        }
        if let range = text.range(of: #"password=\S+"#, options: .regularExpression) {
            text.replaceSubrange(range, with: "password=***")
        }
        return text
    }
}
