import CResolv
import Dispatch
import Foundation
import MTASTSCore
import ServerSupport

/// Why a look-up gave no records. `noRecords` is an authoritative "nothing there" (NXDOMAIN or
/// NODATA); `temporary` (SERVFAIL, time-out, REFUSED…) must not be read as "no record".
public struct DNSError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case nxdomain, nodata, temporary, malformed
    }
    public var kind: Kind
    public var name: String
    public var reason: String

    public var isNoRecords: Bool { kind == .nxdomain || kind == .nodata }
    public var isTemporary: Bool { kind == .temporary || kind == .malformed }

    public var description: String {
        switch kind {
        case .nxdomain: return "\(name): no such name (NXDOMAIN)"
        case .nodata: return "\(name): no record of that type"
        case .temporary: return "\(name): temporary DNS failure (\(reason))"
        case .malformed: return "\(name): \(reason)"
        }
    }
}

/// An answer: the records of the asked type, whether the resolver vouched for them with DNSSEC
/// (the AD bit), and the CNAMEs followed on the way.
public struct DNSAnswer<Record: Sendable>: Sendable {
    public var records: [Record]
    public var authenticated: Bool
    public var cnames: [String]
}

public struct MXRecord: Sendable, Equatable, Hashable {
    public var preference: UInt16
    /// The exchange host name, without the root dot; empty for a null MX (RFC 7505).
    public var exchange: String
    public init(preference: UInt16, exchange: String) {
        self.preference = preference
        self.exchange = exchange
    }
}

public struct TLSARecord: Sendable, Equatable, Hashable {
    public var usage: UInt8
    public var selector: UInt8
    public var matchingType: UInt8
    public var data: [UInt8]
    public init(usage: UInt8, selector: UInt8, matchingType: UInt8, data: [UInt8]) {
        self.usage = usage
        self.selector = selector
        self.matchingType = matchingType
        self.data = data
    }
}

/// DNS look-ups over glibc's libresolv: blocking calls on a dedicated queue, one resolver state per
/// call (kept in a small pool), a per-try time-out, TCP fallback for truncated answers (glibc retries
/// over TCP by itself), and a chosen server `IP:PORT` instead of /etc/resolv.conf.
public final class DNSResolver: Sendable {
    public struct Configuration: Sendable {
        /// `IPv4:PORT` (or an IPv4 alone, port 53); nil uses /etc/resolv.conf.
        public var server: String?
        /// Seconds per try.
        public var timeout: Int
        public var tries: Int
        public var tcpOnly: Bool

        public init(server: String? = nil, timeout: Int = 5, tries: Int = 2, tcpOnly: Bool = false) {
            self.server = server
            self.timeout = timeout
            self.tries = tries
            self.tcpOnly = tcpOnly
        }
    }

    public let configuration: Configuration
    /// libresolv blocks for up to timeout × tries: look-ups run on their own bounded pool (the
    /// project's one way off the async threads), wide enough for `mtasts check --concurrency 64`;
    /// its threads start as concurrent look-ups need them.
    public static let pool = BlockingPool(threads: 64)
    private let pool = StatePool()
    private let serverHost: String?
    private let serverPort: UInt16

    public struct InvalidServer: Error, CustomStringConvertible {
        public var description: String
    }

    public init(_ configuration: Configuration = Configuration()) throws(InvalidServer) {
        self.configuration = configuration
        if let server = configuration.server {
            let parts = server.split(separator: ":", omittingEmptySubsequences: false)
            var addr = in_addr()
            guard parts.count <= 2, inet_pton(AF_INET, String(parts[0]), &addr) == 1 else {
                throw InvalidServer(description: "DNS server '\(server)' must be IPv4[:PORT]")
            }
            serverHost = String(parts[0])
            if parts.count == 2 {
                guard let p = UInt16(parts[1]), p > 0 else { throw InvalidServer(description: "DNS server '\(server)': bad port") }
                serverPort = p
            } else {
                serverPort = 53
            }
        } else {
            serverHost = nil
            serverPort = 53
        }
    }

    deinit { pool.drain() }

    /// Sends one query and parses the response. Throws `DNSError` for every outcome without records.
    public func query(_ name: String, type: UInt16) async throws(DNSError) -> DNSMessage {
        let result: Result<DNSMessage, DNSError>
        do { result = try await Self.pool.run { self.blockingQuery(name, type: type) } } catch {
            throw DNSError(kind: .temporary, name: name, reason: "shutting down")
        }
        return try result.get()
    }

    private func blockingQuery(_ name: String, type: UInt16) -> Result<DNSMessage, DNSError> {
        guard let state = pool.take() ?? mtasts_res_new() else {
            return .failure(DNSError(kind: .temporary, name: name, reason: "the resolver could not be initialised"))
        }
        if let serverHost { _ = mtasts_res_set_server(state, serverHost, serverPort) }
        mtasts_res_set_timing(state, Int32(configuration.timeout), Int32(configuration.tries), configuration.tcpOnly ? 1 : 0)
        var buffer = [UInt8](repeating: 0, count: 65_535)
        let length = buffer.withUnsafeMutableBufferPointer { mtasts_res_query(state, name, Int32(type), $0.baseAddress, Int32($0.count)) }
        let herrno = mtasts_res_herrno(state)
        pool.give(state)
        if length < 0 {
            switch herrno {
            case HOST_NOT_FOUND: return .failure(DNSError(kind: .nxdomain, name: name, reason: "NXDOMAIN"))
            case NO_DATA: return .failure(DNSError(kind: .nodata, name: name, reason: "NODATA"))
            case TRY_AGAIN: return .failure(DNSError(kind: .temporary, name: name, reason: "SERVFAIL or no answer in time"))
            default: return .failure(DNSError(kind: .temporary, name: name, reason: "the server refused or failed (h_errno \(herrno))"))
            }
        }
        do {
            return .success(try DNSMessage(parsing: Array(buffer[0..<Int(length)])))
        } catch {
            return .failure(DNSError(kind: .malformed, name: name, reason: error.description))
        }
    }

    private func answer<R>(_ name: String, type: UInt16, _ pick: (DNSMessage.RData) -> R?) async throws(DNSError) -> DNSAnswer<R> {
        let message = try await query(name, type: type)
        var records: [R] = []
        var cnames: [String] = []
        for record in message.answers {
            if case .cname(let target) = record.data, type != DNSMessage.typeCNAME {
                cnames.append(target)
            } else if record.type == type, let r = pick(record.data) {
                records.append(r)
            }
        }
        if records.isEmpty { throw DNSError(kind: .nodata, name: name, reason: "NODATA") }
        return DNSAnswer(records: records, authenticated: message.authenticated, cnames: cnames)
    }

    /// TXT records, each as its list of character-strings (bytes; RFC 8461 wants US-ASCII).
    public func txt(_ name: String) async throws(DNSError) -> DNSAnswer<[[UInt8]]> {
        try await answer(name, type: DNSMessage.typeTXT) { if case .txt(let s) = $0 { return s } else { return nil } }
    }

    public func mx(_ name: String) async throws(DNSError) -> DNSAnswer<MXRecord> {
        try await answer(name, type: DNSMessage.typeMX) {
            if case .mx(let p, let e) = $0 { return MXRecord(preference: p, exchange: e) } else { return nil }
        }
    }

    public func a(_ name: String) async throws(DNSError) -> DNSAnswer<String> {
        try await answer(name, type: DNSMessage.typeA) { if case .a(let s) = $0 { return s } else { return nil } }
    }

    public func aaaa(_ name: String) async throws(DNSError) -> DNSAnswer<String> {
        try await answer(name, type: DNSMessage.typeAAAA) { if case .aaaa(let s) = $0 { return s } else { return nil } }
    }

    public func cname(_ name: String) async throws(DNSError) -> DNSAnswer<String> {
        try await answer(name, type: DNSMessage.typeCNAME) { if case .cname(let s) = $0 { return s } else { return nil } }
    }

    public func tlsa(_ name: String) async throws(DNSError) -> DNSAnswer<TLSARecord> {
        try await answer(name, type: DNSMessage.typeTLSA) {
            if case .tlsa(let u, let s, let m, let d) = $0 { return TLSARecord(usage: u, selector: s, matchingType: m, data: d) } else { return nil }
        }
    }

    /// A and AAAA together (both asked at once). Throws only if neither has records; a temporary
    /// failure of either wins over "no records".
    public func addresses(_ name: String) async throws(DNSError) -> [String] {
        async let v4 = Result<DNSAnswer<String>, DNSError> { () async throws(DNSError) -> DNSAnswer<String> in try await self.a(name) }
        async let v6 = Result<DNSAnswer<String>, DNSError> { () async throws(DNSError) -> DNSAnswer<String> in try await self.aaaa(name) }
        let (r4, r6) = await (v4, v6)
        var out: [String] = []
        if case .success(let a) = r4 { out += a.records }
        if case .success(let a) = r6 { out += a.records }
        if !out.isEmpty { return out }
        for r in [r4, r6] { if case .failure(let e) = r, e.isTemporary { throw e } }
        if case .failure(let e) = r4 { throw e }
        return out
    }
}

/// Resolver states to reuse; each is used by one call at a time.
private final class StatePool: @unchecked Sendable {
    private var states: [UnsafeMutablePointer<mtasts_res_state>] = []
    private let lock = NSLock()

    func take() -> UnsafeMutablePointer<mtasts_res_state>? {
        lock.lock()
        defer { lock.unlock() }
        return states.popLast()
    }

    func give(_ state: UnsafeMutablePointer<mtasts_res_state>) {
        lock.lock()
        defer { lock.unlock() }
        if states.count < 64 { states.append(state) } else { mtasts_res_free(state) }
    }

    func drain() {
        lock.lock()
        defer { lock.unlock() }
        states.forEach { mtasts_res_free($0) }
        states.removeAll()
    }
}

extension Result where Failure == DNSError {
    /// Captures a look-up's outcome, so that several can run at once with `async let`.
    public init(catching body: () async throws(DNSError) -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

extension DNSError: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.dns, description, temporary: isTemporary) }
}

extension DNSResolver.InvalidServer: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.configuration, description) }
}
