import Foundation
import MTASTSCore

/// The resolver's clock is the project's one clock (`MTASTSCore.WallClock`).
public typealias PolicyClock = WallClock

/// What the cache knows of one domain: a policy (while `expiresAt` is ahead), or that it has
/// none (a negative entry, for a short while).
public struct CacheEntry: Sendable, Equatable {
    public var domain: String
    /// The policy as fetched and validated; nil for a negative entry.
    public var policy: STSPolicy?
    /// The `id` of the `_mta-sts` record the policy was fetched under.
    public var stsID: String?
    /// The last successful fetch (policy) or when "no policy" was found (negative entry).
    public var fetchedAt: Double
    /// `fetchedAt + max_age` for a policy; `fetchedAt` + the negative-cache time otherwise.
    /// Never moved by a TXT check that finds the same id (RFC 8461 §5.1: max_age counts from
    /// the fetch).
    public var expiresAt: Double
    /// The last look at the `_mta-sts` record.
    public var checkedAt: Double
    /// A fetch under this record id failed at `failedAt`; not retried for the same id before
    /// the retry delay has passed.
    public var failedID: String?
    public var failedAt: Double?
    /// Why there is no policy, or why the last refresh failed: an RFC 8460 result type and a reason.
    public var failure: ResultType?
    public var reason: String?
    /// What DANE says of the domain's MX hosts (looked at only for DNSSEC zones and enforce
    /// policies; re-checked at every record check).
    public var dane: DANEState
    /// The domain's MX host names at the last look (a wildcard `mx:` is answered with the hosts
    /// it covers); nil when never looked up.
    public var mxHosts: [String]?
    /// The last look-up that used this entry (coarse; for eviction).
    public var lastUsed: Double

    public init(domain: String, policy: STSPolicy?, stsID: String?, fetchedAt: Double, expiresAt: Double, checkedAt: Double,
                failedID: String? = nil, failedAt: Double? = nil, failure: ResultType? = nil, reason: String? = nil, dane: DANEState = .none,
                mxHosts: [String]? = nil, lastUsed: Double) {
        self.domain = domain
        self.policy = policy
        self.stsID = stsID
        self.fetchedAt = fetchedAt
        self.expiresAt = expiresAt
        self.checkedAt = checkedAt
        self.failedID = failedID
        self.failedAt = failedAt
        self.failure = failure
        self.reason = reason
        self.dane = dane
        self.mxHosts = mxHosts
        self.lastUsed = lastUsed
    }

    public var isNegative: Bool { policy == nil }
    public func isValid(at now: Double) -> Bool { now < expiresAt }
}

/// DANE for a domain's MX hosts (RFC 7672), as a Postfix with `smtp_dns_support_level = dnssec`
/// would find it.
public enum DANEState: Int, Sendable, Equatable {
    /// DANE does not authenticate every MX (unsigned MX or addresses, no TLSA, only unusable
    /// records): MTA-STS applies.
    case none = 0
    /// Every MX host is authenticated by usable DANE-TA/DANE-EE records on validated MX and
    /// address look-ups: DANE, not MTA-STS (RFC 8461 §2).
    case usable = 1
    /// A look-up failed and nothing is known: neither DANE nor MTA-STS may be assumed.
    case temporary = 2
}

/// Where the cache lives beyond the process: SQLite (one host) or PostgreSQL (shared by a fleet).
/// Calls block; the resolver runs them on a thread pool.
public protocol PolicyStore: Sendable {
    var name: String { get }
    func load(_ domain: String) throws(StorageErrorBox) -> CacheEntry?
    func save(_ entry: CacheEntry) throws(StorageErrorBox)
    func remove(_ domain: String) throws(StorageErrorBox)
    /// Records use without rewriting the entry.
    func touch(_ domains: [String], at time: Double) throws(StorageErrorBox)
    /// The most recently used entries still valid at `time` (warm start): at most `limit` rows,
    /// most recent first (by last use, then domain, both descending), those after `before` in
    /// that order (the previous slice's `last`). A row that no longer decodes is read but left
    /// out of `entries`, so a slice can hold fewer entries than rows read.
    func recent(limit: Int, before: (lastUsed: Double, domain: String)?, validAt time: Double) throws(StorageErrorBox) -> RecentSlice
    /// Policies past half their max_age and not expired at `time` (proactive refresh candidates).
    func refreshCandidates(at time: Double) throws(StorageErrorBox) -> [CacheEntry]
    /// Drops entries unused since `unusedBefore` and negative entries expired at `time`; returns how many.
    func evict(unusedBefore: Double, at time: Double) throws(StorageErrorBox) -> Int
    /// `load` may be called from several threads at once without waiting on the writer (SQLite:
    /// a pool of reader connections): look-ups that miss the hot layer read it directly.
    var concurrentReads: Bool { get }
}

extension PolicyStore {
    public var concurrentReads: Bool { false }
}

/// A store's failure, for a `TEMP` reply and the log.
public struct StorageErrorBox: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension StorageErrorBox: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.storage, description, temporary: true) }
}

/// One slice of the warm start: the entries read, how many rows that took, and where the next
/// slice begins (the last row read, decoded or not).
public struct RecentSlice: Sendable {
    public var entries: [CacheEntry]
    public var rows: Int
    public var last: (lastUsed: Double, domain: String)?

    public init(entries: [CacheEntry], rows: Int, last: (lastUsed: Double, domain: String)?) {
        self.entries = entries
        self.rows = rows
        self.last = last
    }
}
