import Foundation
import MTASTSCore
import Storage

/// The columns both SQL stores keep, in this order.
private let columns = "domain, policy, sts_id, fetched_at, expires_at, checked_at, failed_id, failed_at, failure, reason, dane, last_used"

private func row(_ e: CacheEntry) -> [SQLValue] {
    [.text(e.domain), e.policy.map { .text($0.render(lineEnding: "\n")) } ?? .null, e.stsID.map(SQLValue.text) ?? .null,
     .real(e.fetchedAt), .real(e.expiresAt), .real(e.checkedAt), e.failedID.map(SQLValue.text) ?? .null,
     e.failedAt.map(SQLValue.real) ?? .null, e.failure.map { .text($0.rawValue) } ?? .null, e.reason.map(SQLValue.text) ?? .null,
     .integer(e.dane ? 1 : 0), .real(e.lastUsed)]
}

private func entry(_ r: [SQLValue]) -> CacheEntry? {
    guard r.count == 12, let domain = r[0].string else { return nil }
    // A stored policy is parsed again; one that no longer parses is dropped (as if never cached).
    var policy: STSPolicy?
    if let text = r[1].string {
        guard let parsed = STSPolicy.parse(text).policy else { return nil }
        policy = parsed
    }
    return CacheEntry(domain: domain, policy: policy, stsID: r[2].string, fetchedAt: r[3].double ?? 0, expiresAt: r[4].double ?? 0,
                      checkedAt: r[5].double ?? 0, failedID: r[6].string, failedAt: r[7].double, failure: r[8].string.map(ResultType.init),
                      reason: r[9].string, dane: (r[10].int ?? 0) != 0, lastUsed: r[11].double ?? 0)
}

/// The policy cache in an SQLite file (the default): survives restarts; WAL, so `mtasts query`
/// reads it while the daemon writes.
public final class SQLitePolicyStore: PolicyStore {
    public let name = "sqlite"
    let db: SQLiteDatabase

    public init(path: String) throws(StorageErrorBox) {
        do {
            db = try SQLiteDatabase(path: path)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS sts_policy_cache (
                    domain TEXT PRIMARY KEY, policy TEXT, sts_id TEXT, fetched_at REAL NOT NULL, expires_at REAL NOT NULL,
                    checked_at REAL NOT NULL, failed_id TEXT, failed_at REAL, failure TEXT, reason TEXT,
                    dane INTEGER NOT NULL DEFAULT 0, last_used REAL NOT NULL)
                """)
        } catch { throw StorageErrorBox(error.description) }
    }

    public func load(_ domain: String) throws(StorageErrorBox) -> CacheEntry? {
        do { return try db.query("SELECT \(columns) FROM sts_policy_cache WHERE domain = ?", [.text(domain)]).first.flatMap(entry) } catch {
            throw StorageErrorBox(error.description)
        }
    }

    public func save(_ e: CacheEntry) throws(StorageErrorBox) {
        do { try db.query("INSERT OR REPLACE INTO sts_policy_cache (\(columns)) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row(e)) } catch {
            throw StorageErrorBox(error.description)
        }
    }

    public func remove(_ domain: String) throws(StorageErrorBox) {
        do { try db.query("DELETE FROM sts_policy_cache WHERE domain = ?", [.text(domain)]) } catch { throw StorageErrorBox(error.description) }
    }

    public func all() throws(StorageErrorBox) -> [CacheEntry] {
        do { return try db.query("SELECT \(columns) FROM sts_policy_cache").compactMap(entry) } catch { throw StorageErrorBox(error.description) }
    }

    public func recent(limit: Int, validAt time: Double) throws(StorageErrorBox) -> [CacheEntry] {
        do {
            return try db.query("SELECT \(columns) FROM sts_policy_cache WHERE expires_at > ? ORDER BY last_used DESC LIMIT ?", [.real(time), .integer(Int64(limit))]).compactMap(entry)
        } catch { throw StorageErrorBox(error.description) }
    }

    public func refreshCandidates(at time: Double) throws(StorageErrorBox) -> [CacheEntry] {
        do {
            return try db.query("SELECT \(columns) FROM sts_policy_cache WHERE policy IS NOT NULL AND expires_at > ? AND fetched_at + (expires_at - fetched_at) / 2 <= ?", [.real(time), .real(time)]).compactMap(entry)
        } catch { throw StorageErrorBox(error.description) }
    }

    public func evict(unusedBefore: Double, at time: Double) throws(StorageErrorBox) -> Int {
        do {
            return Int(try db.query("DELETE FROM sts_policy_cache WHERE last_used < ? OR (policy IS NULL AND expires_at <= ?) RETURNING 1", [.real(unusedBefore), .real(time)]).count)
        } catch { throw StorageErrorBox(error.description) }
    }

    public func touch(_ domains: [String], at time: Double) throws(StorageErrorBox) {
        do {
            try db.execute("BEGIN")
            for d in domains { try db.query("UPDATE sts_policy_cache SET last_used = ? WHERE domain = ?", [.real(time), .text(d)]) }
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw StorageErrorBox(error.description)
        }
    }
}

/// The policy cache in PostgreSQL: one cache for several daemons on several MTAs; a policy
/// fetched by one is used by all.
public final class PostgresPolicyStore: PolicyStore {
    public let name = "postgres"
    let db: PostgresDatabase

    public init(dsn: String, timeout: Duration = .seconds(5)) throws(StorageErrorBox) {
        do {
            db = try PostgresDatabase(dsn: dsn, statementTimeout: timeout)
            // Two daemons starting at once may both create the table: the loser's error is harmless.
            do {
                try db.query("""
                    CREATE TABLE IF NOT EXISTS sts_policy_cache (
                        domain TEXT PRIMARY KEY, policy TEXT, sts_id TEXT, fetched_at DOUBLE PRECISION NOT NULL,
                        expires_at DOUBLE PRECISION NOT NULL, checked_at DOUBLE PRECISION NOT NULL, failed_id TEXT,
                        failed_at DOUBLE PRECISION, failure TEXT, reason TEXT, dane INTEGER NOT NULL DEFAULT 0,
                        last_used DOUBLE PRECISION NOT NULL)
                    """)
            } catch {
                _ = try db.query("SELECT 1 FROM sts_policy_cache LIMIT 1")
            }
        } catch { throw StorageErrorBox(error.description) }
    }

    public func load(_ domain: String) throws(StorageErrorBox) -> CacheEntry? {
        do { return try db.query("SELECT \(columns) FROM sts_policy_cache WHERE domain = $1", [.text(domain)]).first.flatMap(entry) } catch {
            throw StorageErrorBox(error.description)
        }
    }

    public func save(_ e: CacheEntry) throws(StorageErrorBox) {
        let updates = columns.split(separator: ",").dropFirst().map { "\($0.trimmingCharacters(in: .whitespaces)) = EXCLUDED.\($0.trimmingCharacters(in: .whitespaces))" }
        let sql = "INSERT INTO sts_policy_cache (\(columns)) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) ON CONFLICT (domain) DO UPDATE SET \(updates.joined(separator: ", "))"
        do { try db.query(sql, row(e)) } catch { throw StorageErrorBox(error.description) }
    }

    public func remove(_ domain: String) throws(StorageErrorBox) {
        do { try db.query("DELETE FROM sts_policy_cache WHERE domain = $1", [.text(domain)]) } catch { throw StorageErrorBox(error.description) }
    }

    public func all() throws(StorageErrorBox) -> [CacheEntry] {
        do { return try db.query("SELECT \(columns) FROM sts_policy_cache").compactMap(entry) } catch { throw StorageErrorBox(error.description) }
    }

    public func recent(limit: Int, validAt time: Double) throws(StorageErrorBox) -> [CacheEntry] {
        do {
            return try db.query("SELECT \(columns) FROM sts_policy_cache WHERE expires_at > $1 ORDER BY last_used DESC LIMIT $2", [.real(time), .integer(Int64(limit))]).compactMap(entry)
        } catch { throw StorageErrorBox(error.description) }
    }

    public func refreshCandidates(at time: Double) throws(StorageErrorBox) -> [CacheEntry] {
        do {
            return try db.query("SELECT \(columns) FROM sts_policy_cache WHERE policy IS NOT NULL AND expires_at > $1 AND fetched_at + (expires_at - fetched_at) / 2 <= $1", [.real(time)]).compactMap(entry)
        } catch { throw StorageErrorBox(error.description) }
    }

    public func evict(unusedBefore: Double, at time: Double) throws(StorageErrorBox) -> Int {
        do {
            return try db.query("DELETE FROM sts_policy_cache WHERE last_used < $1 OR (policy IS NULL AND expires_at <= $2) RETURNING 1", [.real(unusedBefore), .real(time)]).count
        } catch { throw StorageErrorBox(error.description) }
    }

    public func touch(_ domains: [String], at time: Double) throws(StorageErrorBox) {
        guard !domains.isEmpty else { return }
        // One statement: an array parameter in PostgreSQL's text form.
        let list = "{" + domains.map { "\"\($0)\"" }.joined(separator: ",") + "}"
        do { try db.query("UPDATE sts_policy_cache SET last_used = GREATEST(last_used, $1) WHERE domain = ANY($2::text[])", [.real(time), .text(list)]) } catch {
            throw StorageErrorBox(error.description)
        }
    }
}
