import Foundation
import MTASTSCore
import NIOConcurrencyHelpers
import Storage

/// One domain's row (`load`, on the writer's connection or a reader's).
private let loadSQL = "SELECT \(columns) FROM sts_policy_cache WHERE domain = ?"

/// The columns both SQL stores keep, in this order.
private let columns = "domain, policy, sts_id, fetched_at, expires_at, checked_at, failed_id, failed_at, failure, reason, dane, last_used, mx_hosts"

private func row(_ e: CacheEntry) -> [SQLValue] {
    [.text(e.domain), e.policy.map { .text($0.render(lineEnding: "\n")) } ?? .null, e.stsID.map(SQLValue.text) ?? .null,
     .real(e.fetchedAt), .real(e.expiresAt), .real(e.checkedAt), e.failedID.map(SQLValue.text) ?? .null,
     e.failedAt.map(SQLValue.real) ?? .null, e.failure.map { .text($0.rawValue) } ?? .null, e.reason.map(SQLValue.text) ?? .null,
     .integer(Int64(e.dane.rawValue)), .real(e.lastUsed), e.mxHosts.map { .text($0.joined(separator: " ")) } ?? .null]
}

private func entry(_ r: [SQLValue]) -> CacheEntry? {
    guard r.count == 13, let domain = r[0].string else { return nil }
    // A stored policy is parsed again; one that no longer parses is dropped (as if never cached).
    var policy: STSPolicy?
    if let text = r[1].string {
        // What this cache wrote is read without the linter's work; anything else is parsed fully.
        guard let parsed = STSPolicy.parseCanonical(text) ?? STSPolicy.parse(text).policy else { return nil }
        policy = parsed
    }
    return CacheEntry(domain: domain, policy: policy, stsID: r[2].string, fetchedAt: r[3].double ?? 0, expiresAt: r[4].double ?? 0,
                      checkedAt: r[5].double ?? 0, failedID: r[6].string, failedAt: r[7].double, failure: r[8].string.map(ResultType.init),
                      reason: r[9].string, dane: DANEState(rawValue: Int(r[10].int ?? 0)) ?? .none,
                      mxHosts: r[12].string.map { $0.split(separator: " ").map(String.init) }, lastUsed: r[11].double ?? 0)
}

/// The policy cache in SQL: one implementation for both databases (`SQLDatabase` numbers the
/// parameters for PostgreSQL). Upserts use `ON CONFLICT … DO UPDATE`, which both accept.
public class SQLPolicyStore: PolicyStore, @unchecked Sendable {
    public let name: String
    private let db: SQLDatabase
    /// The table exists (made by the first statement that reaches the database).
    private let ready = NSLock()
    private var schemaDone = false

    init(db: SQLDatabase, createNow: Bool = true) throws(StorageErrorBox) {
        self.db = db
        self.name = db.kind.rawValue
        if createNow { try prepare() }
    }

    /// Creates the table once (at start, or at the first call that reaches a database that was
    /// down at start).
    private func prepare() throws(StorageErrorBox) {
        ready.lock()
        defer { ready.unlock() }
        guard !schemaDone else { return }
        do {
            // Two daemons starting at once may both create the table: the loser's error is harmless.
            do { try db.query(Self.schema(real: db.realType)) } catch {
                _ = try db.query("SELECT 1 FROM sts_policy_cache LIMIT 1")
            }
            // The warm start reads the most recently used first, down this index.
            do { try db.query("CREATE INDEX IF NOT EXISTS sts_policy_cache_recent ON sts_policy_cache (last_used, domain)") } catch {
                _ = try db.query("SELECT 1 FROM sts_policy_cache LIMIT 1")  // another daemon made it at the same moment
            }
            // Added later: a cache made by an older version gets the column.
            do { _ = try db.query("SELECT mx_hosts FROM sts_policy_cache LIMIT 1") } catch {
                do { try db.query("ALTER TABLE sts_policy_cache ADD COLUMN mx_hosts TEXT") } catch {
                    _ = try db.query("SELECT mx_hosts FROM sts_policy_cache LIMIT 1")  // another daemon added it
                }
            }
        } catch { throw StorageErrorBox(error.description) }
        schemaDone = true
    }

    static func schema(real: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS sts_policy_cache (
            domain TEXT PRIMARY KEY, policy TEXT, sts_id TEXT, fetched_at \(real) NOT NULL, expires_at \(real) NOT NULL,
            checked_at \(real) NOT NULL, failed_id TEXT, failed_at \(real), failure TEXT, reason TEXT,
            dane INTEGER NOT NULL DEFAULT 0, last_used \(real) NOT NULL, mx_hosts TEXT)
        """
    }

    @discardableResult
    func query(_ sql: String, _ parameters: [SQLValue] = []) throws(StorageErrorBox) -> [[SQLValue]] {
        try prepare()
        do { return try db.query(sql, parameters) } catch { throw StorageErrorBox(error.description) }
    }

    /// PostgreSQL: one connection, calls in turn (see `SQLitePolicyStore`).
    public var concurrentReads: Bool { false }

    public func load(_ domain: String) throws(StorageErrorBox) -> CacheEntry? {
        try query(loadSQL, [.text(domain)]).first.flatMap(entry)
    }

    public func save(_ e: CacheEntry) throws(StorageErrorBox) {
        let updates = columns.split(separator: ",").dropFirst().map { $0.trimmingCharacters(in: .whitespaces) }.map { "\($0) = excluded.\($0)" }
        // Never an older entry over a newer one: a recheck that started before another daemon
        // sharing the store fetched a new policy must not put the old one back.
        try query("""
            INSERT INTO sts_policy_cache (\(columns)) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (domain) DO UPDATE SET \(updates.joined(separator: ", "))
            WHERE excluded.fetched_at >= sts_policy_cache.fetched_at
            """, row(e))
    }

    public func remove(_ domain: String) throws(StorageErrorBox) {
        try query("DELETE FROM sts_policy_cache WHERE domain = ?", [.text(domain)])
    }

    public func recent(limit: Int, before: (lastUsed: Double, domain: String)?, validAt time: Double) throws(StorageErrorBox) -> RecentSlice {
        // Read down the (last_used, domain) index from where the previous slice ended: each
        // slice costs its own rows (an OFFSET, or an ORDER BY without the index, sorted the whole
        // table for every slice).
        let after = before.map { _ in "(last_used, domain) < (?, ?) AND " } ?? ""
        let from: [SQLValue] = before.map { [.real($0.lastUsed), .text($0.domain)] } ?? []
        let rows = try query("SELECT \(columns) FROM sts_policy_cache WHERE \(after)expires_at > ? ORDER BY last_used DESC, domain DESC LIMIT ?",
                             from + [.real(time), .integer(Int64(limit))])
        // The next slice starts after the last row read, even one that does not decode (its
        // entry is left out; were the cursor taken from the last entry, a slice ending in such a
        // row would look short and end the warm start).
        let last = rows.last.flatMap { r in r.count == 13 ? r[0].string.map { (lastUsed: r[11].double ?? 0, domain: $0) } : nil }
        return RecentSlice(entries: rows.compactMap(entry), rows: rows.count, last: last)
    }

    public func refreshCandidates(at time: Double) throws(StorageErrorBox) -> [CacheEntry] {
        try query("SELECT \(columns) FROM sts_policy_cache WHERE policy IS NOT NULL AND expires_at > ? AND fetched_at + (expires_at - fetched_at) / 2 <= ?", [.real(time), .real(time)]).compactMap(entry)
    }

    public func evict(unusedBefore: Double, at time: Double) throws(StorageErrorBox) -> Int {
        try query("DELETE FROM sts_policy_cache WHERE last_used < ? OR (policy IS NULL AND expires_at <= ?) RETURNING 1", [.real(unusedBefore), .real(time)]).count
    }

    public func touch(_ domains: [String], at time: Double) throws(StorageErrorBox) {
        guard !domains.isEmpty else { return }
        try prepare()
        do {
            try db.transaction {
                for d in domains { try db.query("UPDATE sts_policy_cache SET last_used = ? WHERE domain = ? AND last_used < ?", [.real(time), .text(d), .real(time)]) }
            }
        } catch { throw StorageErrorBox("\(error)") }
    }
}

/// The policy cache in an SQLite file (the default): survives restarts; WAL, so `mtasts query`
/// reads it while the daemon writes.
public final class SQLitePolicyStore: SQLPolicyStore, @unchecked Sendable {
    let path: String
    /// Reader connections not in use: `load` takes one (opening another when none is free, up to
    /// `maxReaders`; past that it reads on the writer's connection), so reads run side by side
    /// with each other and with the writer (WAL).
    private let idleReaders = NIOLockedValueBox<(idle: [SQLiteDatabase], open: Int)>(([], 0))
    static let maxReaders = 8

    public init(path: String) throws(StorageErrorBox) {
        self.path = path
        let db: SQLDatabase
        do { db = try SQLDatabase(sqlite: path) } catch { throw StorageErrorBox(error.description) }
        try super.init(db: db)
    }

    public override var concurrentReads: Bool { true }

    public override func load(_ domain: String) throws(StorageErrorBox) -> CacheEntry? {
        let reader: SQLiteDatabase? = idleReaders.withLockedValue { pool in
            if let r = pool.idle.popLast() { return r }
            guard pool.open < Self.maxReaders, let r = try? SQLiteDatabase(path: path) else { return nil }
            pool.open += 1
            return r
        }
        guard let reader else { return try super.load(domain) }
        defer { idleReaders.withLockedValue { $0.idle.append(reader) } }
        do {
            return try reader.query(loadSQL, [.text(domain)]).first.flatMap(entry)
        } catch { throw StorageErrorBox(error.description) }
    }
}

/// The policy cache in PostgreSQL: one cache for several daemons on several MTAs; a policy
/// fetched by one is used by all.
public final class PostgresPolicyStore: SQLPolicyStore, @unchecked Sendable {
    /// `connectNow: false`: the daemon starts while PostgreSQL is down; the first call that
    /// reaches it connects and creates the table.
    public init(dsn: String, timeout: Duration = .seconds(5), connectNow: Bool = true) throws(StorageErrorBox) {
        let db: SQLDatabase
        do { db = try SQLDatabase(postgres: dsn, timeout: timeout, connectNow: connectNow) } catch { throw StorageErrorBox(error.description) }
        try super.init(db: db, createNow: connectNow)
    }
}
