import CLibPQ
import Foundation

/// One PostgreSQL connection through libpq, serialised by a lock; reconnects once when the
/// server went away. Parameters are `$1…`, sent as text; results come back as text. Calls block:
/// run them off event loops.
///
/// Every call has a client-side time limit: the server's `statement_timeout` cannot fire when the
/// server does not run at all (stopped, frozen, a dead path that still accepts TCP), so the
/// connection is made with libpq's `connect_timeout` and every statement waits for its answer
/// with `poll` and a deadline (statement_timeout + 1 s); past it the connection is dropped and
/// the next call connects again. A hung server therefore holds a calling thread for a bounded
/// time, never for ever.
public final class PostgresDatabase: @unchecked Sendable {
    private let dsn: String
    private let statementTimeout: Duration
    private var connection: OpaquePointer?
    private let lock = NSLock()

    /// - Parameters:
    ///   - dsn: a libpq connection string or URI (`postgres://user@%2Frun%2Fpostgresql/db`,
    ///     `host=127.0.0.1 port=5432 dbname=mtasts`).
    ///   - statementTimeout: the server cancels a statement running longer.
    ///   - connectNow: false opens the connection at the first statement instead (a daemon that
    ///     starts while the server is down).
    public init(dsn: String, statementTimeout: Duration = .seconds(5), connectNow: Bool = true) throws(StorageError) {
        self.dsn = dsn
        self.statementTimeout = statementTimeout
        if let why = mtasts_pq_load() { throw StorageError("PostgreSQL: \(String(cString: why))") }
        guard connectNow else { return }
        lock.lock()
        defer { lock.unlock() }
        try connect()
    }

    /// The statement time-out in milliseconds (at least 1).
    private var timeoutMilliseconds: Int64 {
        max(1, statementTimeout.components.seconds * 1000 + statementTimeout.components.attoseconds / 1_000_000_000_000_000)
    }

    deinit { mtasts_PQfinish(connection) }

    private func connect() throws(StorageError) {
        mtasts_PQfinish(connection)
        connection = nil
        // The DSN is expanded (URI or key=value); connect_timeout after it wins over one in it.
        // libpq counts it in whole seconds, at least 2.
        let connectSeconds = String(max(2, (timeoutMilliseconds + 999) / 1000))
        let keywords = ["dbname", "connect_timeout"], values = [dsn, connectSeconds]
        let opened: OpaquePointer? = withCStrings(keywords) { k in withCStrings(values) { v in mtasts_PQconnectdbParams(k, v, 1) } }
        guard let opened, mtasts_PQstatus(opened) == CONNECTION_OK else {
            let message = opened.map { String(cString: mtasts_PQerrorMessage($0)) } ?? "out of memory"
            mtasts_PQfinish(opened)
            throw StorageError("cannot connect to PostgreSQL (\(Self.redact(dsn))): \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        connection = opened
        _ = try run("SET statement_timeout = \(timeoutMilliseconds)", [])
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
        if connection == nil || mtasts_PQstatus(connection) != CONNECTION_OK {
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
            // Not after the client-side limit (connection dropped): that would double the wait.
            guard connection != nil, mtasts_PQstatus(connection) != CONNECTION_OK else { throw error }
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
        guard let connection else { throw StorageError("PostgreSQL: not connected") }
        let texts: [String?] = parameters.map { $0.postgresText }
        let sent: Int32
        if texts.isEmpty {
            sent = mtasts_PQsendQuery(connection, sql)
        } else {
            var cStrings: [UnsafeMutablePointer<CChar>?] = texts.map { $0.flatMap { strdup($0) } }
            defer { cStrings.forEach { free($0) } }
            sent = cStrings.withUnsafeMutableBufferPointer { buffer in
                buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { values in
                    mtasts_PQsendQueryParams(connection, sql, Int32(texts.count), nil, values.baseAddress, nil, nil, 0)
                }
            }
        }
        guard sent == 1 else { throw StorageError("PostgreSQL: \(String(cString: mtasts_PQerrorMessage(connection)).trimmingCharacters(in: .whitespacesAndNewlines))") }
        // The answer, within the client-side limit; several statements give several results
        // (the last one's rows are returned, the first error is thrown).
        let limit = timeoutMilliseconds + 1_000
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(limit) * 1_000_000
        var rows: [[SQLValue]] = []
        var failure: String?
        while true {
            while mtasts_PQisBusy(connection) == 1 {
                let now = DispatchTime.now().uptimeNanoseconds
                var descriptor = pollfd(fd: mtasts_PQsocket(connection), events: Int16(POLLIN), revents: 0)
                let ready = now >= deadline ? 0 : poll(&descriptor, 1, Int32(min((deadline - now) / 1_000_000 + 1, 60_000)))
                if ready < 0, errno == EINTR { continue }
                if ready <= 0 {
                    // No answer in time: the connection is given up (a late answer would be read
                    // as the next statement's); the next call connects again.
                    mtasts_PQfinish(connection)
                    self.connection = nil
                    throw StorageError("PostgreSQL did not answer within \(limit / 1000) s (client-side limit; the connection is dropped)")
                }
                guard mtasts_PQconsumeInput(connection) == 1 else {
                    throw StorageError("PostgreSQL: \(String(cString: mtasts_PQerrorMessage(connection)).trimmingCharacters(in: .whitespacesAndNewlines))")
                }
            }
            guard let result = mtasts_PQgetResult(connection) else { break }
            defer { mtasts_PQclear(result) }
            let status = mtasts_PQresultStatus(result)
            guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
                if failure == nil { failure = String(cString: mtasts_PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines) }
                continue
            }
            rows = Self.rows(result)
        }
        if let failure { throw StorageError("PostgreSQL: \(failure.isEmpty ? String(cString: mtasts_PQerrorMessage(connection)) : failure)") }
        return rows
    }

    private static func rows(_ result: OpaquePointer) -> [[SQLValue]] {
        let rowCount = mtasts_PQntuples(result)
        let columnCount = mtasts_PQnfields(result)
        var rows: [[SQLValue]] = []
        rows.reserveCapacity(Int(rowCount))
        for r in 0..<rowCount {
            var row: [SQLValue] = []
            for c in 0..<columnCount {
                row.append(mtasts_PQgetisnull(result, r, c) == 1 ? .null : .text(String(cString: mtasts_PQgetvalue(result, r, c))))
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

/// A NULL-terminated array of C strings for libpq's keyword/value calls.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeMutableBufferPointer { buffer in
        buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { body($0.baseAddress!) }
    }
}
