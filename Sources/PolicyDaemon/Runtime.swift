import Foundation
import Logging
import ServerSupport
import MTASTSConfig
import MailDNS
import MTASTSCore
import MTASTSNet
import Atomics
import NIOConcurrencyHelpers
import NIOCore
import PolicyResolver
import Socketmap

/// Builds the resolver a configuration describes (shared by `daemon` and `query`).
public enum DaemonRuntime {
    public struct SetupError: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public static func makeStore(_ config: DaemonConfig) throws(SetupError) -> (any PolicyStore)? {
        do {
            switch config.cache {
            case .memory: return nil
            case .sqlite(let path): return try SQLitePolicyStore(path: path)
            case .postgres(let dsn, let timeout): return try PostgresPolicyStore(dsn: dsn, timeout: .milliseconds(Int64(timeout * 1000)))
            }
        } catch {
            throw SetupError(description: "the policy cache: \(error.description)")
        }
    }

    public static func makeResolver(_ config: DaemonConfig, store: (any PolicyStore)?, clock: any PolicyClock = SystemClock(),
                             logger: Logger = Log.logger("resolver")) throws(SetupError) -> PolicyResolver {
        let dns: DNSResolver
        do { dns = try DNSResolver(.init(server: config.dnsServer, timeout: config.dnsTimeout, tries: 2)) } catch {
            throw SetupError(description: "dns_server: \(error)")
        }
        let checker: CertificateChecker
        do { checker = try CertificateChecker(systemRoots: config.systemRoots, extraPEMFiles: config.caFiles) } catch {
            throw SetupError(description: "ca_file: \(error)")
        }
        let timeout = max(config.defaultZone.timeout, config.zones.values.map(\.timeout).max() ?? 0)
        let fetcher = PolicyFetcher(checker: checker, port: config.policyPort, connectTimeout: .milliseconds(Int64(timeout * 1000)),
                                    deadline: .milliseconds(Int64(timeout * 1000)))
        var settings = PolicyResolver.Settings()
        settings.negativeTTL = config.negativeTTL
        settings.dnsFailureTTL = config.dnsFailureTTL
        settings.recheckAfter = config.cacheGrace
        settings.danePrecedence = config.anyDNSSEC
        if case .memory(let size) = config.cache { settings.hotCapacity = size } else { settings.hotCapacity = config.hotCacheSize }
        settings.refreshConcurrency = config.proactiveConcurrency
        settings.evictAfter = config.evictAfter
        // The whole chain, from the configured time-outs (the socketmap reply deadline follows).
        settings.timeout = config.lookupBudget
        settings.storeTimeout = config.storeTimeout
        return PolicyResolver(dns: dns, fetcher: fetcher, store: store, settings: settings, clock: clock, logger: logger)
    }
}

/// Socketmap requests → resolver → Postfix replies, per zone (the socketmap name).
public final class PolicyMapResponder: SocketmapResponder {
    public let resolver: PolicyResolver
    /// The configuration in force: replaced whole by a reload (`update`), read under the lock by
    /// every reply that is rendered.
    public let config: NIOLockedValueBox<DaemonConfig>
    /// Counts reloads: replies rendered under an older configuration are not used again.
    let generation = ManagedAtomic<Int>(0)

    public init(resolver: PolicyResolver, config: DaemonConfig) {
        self.resolver = resolver
        self.config = NIOLockedValueBox(config)
    }

    /// Replaces the configuration (SIGHUP).
    public func update(_ fresh: DaemonConfig) {
        config.withLockedValue { $0 = fresh }
        generation.wrappingIncrement(ordering: .relaxed)
    }

    /// The hit path: `name key` straight from the request bytes. Only a key that is already a
    /// cached domain's normalised text (lower case, no brackets, port or trailing dot: what
    /// Postfix sends for most mail) is answered here; any other key takes the ordinary path, which
    /// normalises it. The reply is rendered once per entry and zone and kept with the entry.
    public func cachedReply(payload: ByteBuffer, into out: inout ByteBuffer) -> SocketmapCacheAnswer {
        let generation = generation.load(ordering: .relaxed)
        return payload.withUnsafeReadableBytes { bytes -> SocketmapCacheAnswer in
            guard let (zone, key) = Self.split(bytes) else { return .notHandled }
            if resolver.cachedReply(key, zone: zone, generation: generation, into: &out, render: { self.keptReply($0, zone: String(decoding: zone, as: UTF8.self)) }) {
                return .written
            }
            // Lower-case letters, digits, '-', '_' and inner dots: the key is what normalising
            // would make of it, so the ordinary cache look-up would miss as well.
            let normalised = key.first != UInt8(ascii: ".") && key.last != UInt8(ascii: ".")
                && key.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x2E || $0 == 0x5F }
            return normalised ? .notCached : .notHandled
        }
    }

    /// `name key` from the request bytes (both non-empty), without parsing the key further.
    static func split(_ bytes: UnsafeRawBufferPointer) -> (name: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer)? {
        guard let space = bytes.firstIndex(of: UInt8(ascii: " ")), space > 0, space < bytes.count - 1 else { return nil }
        return (UnsafeRawBufferPointer(rebasing: bytes[..<space]), UnsafeRawBufferPointer(rebasing: bytes[(space + 1)...]))
    }

    /// The bytes kept with a cached entry for `zone`: nil for what must not be kept (a `TEMP`, a
    /// wildcard policy whose MX hosts are not known yet).
    func keptReply(_ resolution: Resolution, zone name: String) -> ByteBuffer? {
        guard !Self.needsMXHosts(resolution) else { return nil }
        let reply = render(resolution, zone: name)
        guard !reply.hasPrefix("TEMP") else { return nil }
        var buffer = ByteBufferAllocator().buffer(capacity: reply.utf8.count + 8)
        Netstring.write(reply, to: &buffer)
        return buffer
    }

    /// A normalised key the hot layer does not hold, read from the persistent cache by its
    /// readers (`PolicyResolver.storedReply`): a policy fetched before a restart, by another
    /// daemon sharing the store, or pushed out of the hot layer.
    public func storedReply(payload: ByteBuffer, on loop: any EventLoop) -> EventLoopFuture<ByteBuffer?>? {
        let split = payload.withUnsafeReadableBytes { bytes in
            Self.split(bytes).map { (String(decoding: $0.name, as: UTF8.self), String(decoding: $0.key, as: UTF8.self)) }
        }
        guard let (name, key) = split else { return nil }
        return resolver.storedReply(key, zone: name, generation: generation.load(ordering: .relaxed), on: loop) { self.keptReply($0, zone: name) }
    }

    public func immediateReply(to request: SocketmapRequest) -> String? {
        guard let domain = SocketmapKey.policyDomain(request.key) else { return SocketmapReply.notFound }
        guard let resolution = resolver.cached(domain), !Self.needsMXHosts(resolution) else { return nil }
        return render(resolution, zone: request.name)
    }

    public func reply(to request: SocketmapRequest) async -> String {
        guard let domain = SocketmapKey.policyDomain(request.key) else { return SocketmapReply.notFound }
        var resolution = await resolver.resolve(domain)
        if Self.needsMXHosts(resolution) { resolution = await resolver.withMXHosts(resolution) }
        return render(resolution, zone: request.name)
    }

    /// A wildcard policy whose MX hosts are not known yet: the reply waits for one MX look-up.
    static func needsMXHosts(_ resolution: Resolution) -> Bool {
        resolution.entry?.mxHosts == nil && resolution.policy?.mx.contains(where: \.isWildcard) == true
    }

    public func render(_ resolution: Resolution, zone name: String) -> String {
        Self.render(resolution, zone: name, in: config.withLockedValue { $0 })
    }

    /// The reply for the socketmap name `name` under `config` (the daemon and `mtasts query`).
    public static func render(_ resolution: Resolution, zone name: String, in config: DaemonConfig) -> String {
        let zone = config.zone(name)
        return render(resolution, zone: zone, dnssec: config.dnssec(zone), failureLevel: config.failureLevel(zone))
    }

    /// The reply for a resolution: `TEMP` for our own failures; in a DNSSEC zone (`dnssec`: its
    /// Postfix does DANE) an enforce policy gives way to DANE where every MX is authenticated by
    /// it (RFC 8461 §2), and a DANE look-up that failed with nothing known is `TEMP` (never a
    /// fall-back to MTA-STS); the policy's reply; for a policy that could not be fetched or
    /// validated, with TLSRPT on and Postfix's own level stated (`policy_failure_level`), the
    /// failure for Postfix to report at that very level; else `NOTFOUND ` (a failure reply never
    /// lowers Postfix's level).
    public static func render(_ resolution: Resolution, zone: DaemonConfig.Zone, dnssec: Bool, failureLevel: String?) -> String {
        switch resolution.status {
        case .temporary:
            return SocketmapReply.temporary(resolution.reason)
        case .noPolicy:
            if zone.tlsrpt, let failure = resolution.failure, let failureLevel {
                return "OK \(failureLevel) policy_type=sts policy_domain=\(resolution.domain.text) policy_failure=\(failure.rawValue)"
            }
            return SocketmapReply.notFound
        case .policy:
            guard let entry = resolution.entry, let policy = entry.policy else { return SocketmapReply.notFound }
            if dnssec, policy.mode == .enforce {
                switch entry.dane {
                case .usable: return "OK dane-only"
                case .temporary: return SocketmapReply.temporary("the DANE state of \(resolution.domain.text) is unknown (an MX, address or TLSA look-up failed)")
                case .none: break
                }
            }
            return SocketmapReply.render(policy: policy, domain: resolution.domain, strictTesting: zone.strictTesting,
                                         tlsrpt: zone.tlsrpt, requireSNI: zone.requireSNI, mxHosts: entry.mxHosts,
                                         enforcePatterns: zone.enforceMXPatterns)
        }
    }
}

extension DaemonRuntime {
    /// `user` or `user:group` → ids (the socket's owner).
    public static func owner(_ spec: String) throws(SetupError) -> (uid_t, gid_t) {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        guard let pw = getpwnam(parts[0]) else { throw SetupError(description: "owner: no user '\(parts[0])'") }
        var gid = pw.pointee.pw_gid
        if parts.count == 2 {
            guard let gr = getgrnam(parts[1]) else { throw SetupError(description: "owner: no group '\(parts[1])'") }
            gid = gr.pointee.gr_gid
        }
        return (pw.pointee.pw_uid, gid)
    }
}

extension DaemonRuntime.SetupError: MTASTSErrorConvertible {
    /// The daemon could not start (cache, sockets, resolver): exit 3, a supervisor retries.
    public var mtastsError: MTASTSError { MTASTSError(.setup, description, temporary: true) }
}
