import CSQLite
import Foundation
import MTASTSCore

/// A value bound to or read from a statement, the same for SQLite and PostgreSQL.
public enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    public var int: Int64? {
        switch self {
        case .integer(let v): return v
        case .real(let v): return Self.saturating(v)
        case .text(let s): return Int64(s) ?? Double(s).flatMap(Self.saturating)
        case .null, .blob: return nil
        }
    }

    /// A float (a TOTAL, a numeric sum) as Int64, held at the bounds instead of trapping.
    static func saturating(_ v: Double) -> Int64? {
        guard !v.isNaN else { return nil }
        if v >= 9.223_372_036_854_775e18 { return .max }
        if v <= -9.223_372_036_854_775e18 { return .min }
        return Int64(v)
    }

    public var double: Double? {
        switch self {
        case .integer(let v): return Double(v)
        case .real(let v): return v
        case .text(let s): return Double(s)
        case .null, .blob: return nil
        }
    }

    public var string: String? {
        switch self {
        case .text(let s): return s
        case .integer(let v): return String(v)
        case .real(let v): return String(v)
        case .blob(let b): return String(decoding: b, as: UTF8.self)
        case .null: return nil
        }
    }

    /// The bytes of a BLOB (SQLite) or BYTEA (PostgreSQL, which returns them as `\x` hex text).
    public var bytes: [UInt8]? {
        switch self {
        case .blob(let b): return b
        case .text(let s):
            let u = Array(s.utf8)
            guard u.count >= 2, u[0] == UInt8(ascii: "\\"), u[1] == UInt8(ascii: "x"), u.count % 2 == 0 else { return Array(s.utf8) }
            var out: [UInt8] = []
            out.reserveCapacity(u.count / 2 - 1)
            var i = 2
            while i + 1 < u.count {
                guard let h = hexValue(u[i]), let l = hexValue(u[i + 1]) else { return nil }
                out.append(h << 4 | l)
                i += 2
            }
            return out
        case .integer, .real, .null: return nil
        }
    }

    /// The parameter text PostgreSQL reads (BYTEA as `\x` hex).
    /// PostgreSQL's text type cannot hold NUL: a NUL in text (a report can carry `\u0000`) is
    /// stored as U+FFFD there (SQLite keeps it: text is bound and read by byte length).
    var postgresText: String? {
        if case .text(let s) = self, s.utf8.contains(0) { return s.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") }
        guard case .blob(let b) = self else { return string }
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = [UInt8(ascii: "\\"), UInt8(ascii: "x")]
        out.reserveCapacity(2 + b.count * 2)
        for byte in b { out.append(digits[Int(byte >> 4)]); out.append(digits[Int(byte & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }
}

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}

public struct StorageError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// One SQLite connection (WAL, a busy time-out so several processes can share the file),
/// serialised by a lock, with its prepared statements kept for reuse. Calls block: run them off
/// event loops.
public final class SQLiteDatabase: @unchecked Sendable {
    public let path: String
    private var db: OpaquePointer?
    private let lock = NSLock()
    private var statements: [String: OpaquePointer] = [:]

    public init(path: String, busyTimeout: Duration = .seconds(5)) throws(StorageError) {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750]) } catch {
                throw StorageError("cannot create the directory \(directory) for the database \(path): \(error.localizedDescription)")
            }
        }
        // A new database file is created 0640 (reports name a domain's senders and hosts: no
        // world access; the group lets a second process read); SQLite gives its -wal and -shm
        // files the same mode.
        let created = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o640)
        if created >= 0 { close(created) }
        // SQLITE_OPEN_NOFOLLOW: a link planted at the path is refused, not followed.
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            db = nil
            throw StorageError("cannot open the SQLite database \(path): \(message)")
        }
        sqlite3_busy_timeout(db, Int32(clamping: busyTimeout.components.seconds * 1000 + busyTimeout.components.attoseconds / 1_000_000_000_000_000))
        // Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is
        // locked" at once, without its busy handler, when another process opening the same new
        // file holds a shared one (the daemon and a cron job started together). Retried here
        // within the same time-out.
        let deadline = ContinuousClock.now + busyTimeout
        while true {
            let (rc, message) = run("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            if rc == SQLITE_OK { break }
            guard rc & 0xFF == SQLITE_BUSY || rc & 0xFF == SQLITE_LOCKED, ContinuousClock.now < deadline else {
                throw StorageError("SQLite \(path): \(message)")
            }
            usleep(UInt32.random(in: 2_000...20_000))
        }
    }

    deinit {
        for statement in statements.values { sqlite3_finalize(statement) }
        sqlite3_close(db)
    }

    /// Runs one or more statements without parameters or results (schema, pragmas).
    public func execute(_ sql: String) throws(StorageError) {
        let (rc, message) = run(sql)
        if rc != SQLITE_OK { throw StorageError("SQLite \(path): \(message)") }
    }

    /// sqlite3_exec under the lock: its result code (extended) and message.
    private func run(_ sql: String) -> (Int32, String) {
        lock.lock()
        defer { lock.unlock() }
        var error: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &error)
        guard rc != SQLITE_OK else { return (rc, "") }
        let message = error.map { String(cString: $0) } ?? "unknown error"
        sqlite3_free(error)
        return (sqlite3_extended_errcode(db), message)
    }

    /// Runs one statement with `?` parameters; returns its rows.
    @discardableResult
    public func query(_ sql: String, _ parameters: [SQLValue] = []) throws(StorageError) -> [[SQLValue]] {
        lock.lock()
        defer { lock.unlock() }
        let statement = try prepared(sql)
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        for (i, value) in parameters.enumerated() {
            let index = Int32(i + 1)
            switch value {
            case .null: sqlite3_bind_null(statement, index)
            case .integer(let v): sqlite3_bind_int64(statement, index, v)
            case .real(let v): sqlite3_bind_double(statement, index, v)
            case .text(let s):
                // By byte length: a NUL inside the text is kept, not taken for its end.
                var s = s
                s.withUTF8 { utf8 in
                    _ = utf8.withMemoryRebound(to: CChar.self) { chars in
                        if let base = chars.baseAddress {
                            sqlite3_bind_text(statement, index, base, Int32(chars.count), mtasts_sqlite_transient())
                        } else {
                            sqlite3_bind_text(statement, index, "", 0, mtasts_sqlite_transient())
                        }
                    }
                }
            case .blob(let b):
                b.withUnsafeBytes { raw in _ = sqlite3_bind_blob(statement, index, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(b.count), mtasts_sqlite_transient()) }
            }
        }
        var rows: [[SQLValue]] = []
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw StorageError("SQLite \(path): \(String(cString: sqlite3_errmsg(db)))") }
            let columns = sqlite3_column_count(statement)
            var row: [SQLValue] = []
            row.reserveCapacity(Int(columns))
            for c in 0..<columns {
                switch sqlite3_column_type(statement, c) {
                case SQLITE_INTEGER: row.append(.integer(sqlite3_column_int64(statement, c)))
                case SQLITE_FLOAT: row.append(.real(sqlite3_column_double(statement, c)))
                case SQLITE_NULL: row.append(.null)
                case SQLITE_BLOB:
                    let n = Int(sqlite3_column_bytes(statement, c))
                    if n > 0, let p = sqlite3_column_blob(statement, c) {
                        row.append(.blob(Array(UnsafeRawBufferPointer(start: p, count: n))))
                    } else {
                        row.append(.blob([]))
                    }
                default:
                    if let text = sqlite3_column_text(statement, c) {
                        let n = Int(sqlite3_column_bytes(statement, c))
                        row.append(.text(String(decoding: UnsafeBufferPointer(start: text, count: n), as: UTF8.self)))
                    } else {
                        row.append(.null)
                    }
                }
            }
            rows.append(row)
        }
        return rows
    }

    private func prepared(_ sql: String) throws(StorageError) -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw StorageError("SQLite \(path): \(String(cString: sqlite3_errmsg(db)))")
        }
        statements[sql] = statement
        return statement
    }
}

extension StorageError: MTASTSErrorConvertible {
    /// A database failure is worth a retry: the server may be back, the lock released.
    public var mtastsError: MTASTSError { MTASTSError(.storage, description, temporary: true) }
}
