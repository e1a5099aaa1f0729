import Foundation
import MTASTSCore
import Yams

/// `mtasts daemon`'s configuration: YAML. A configuration file of postfix-mta-sts-resolver is
/// accepted as it is; our own keys follow. Unknown keys and wrong types are errors with the line.
public struct DaemonConfig: Sendable {
    public init() {}

    /// One socketmap name (`socketmap:…:NAME`) and what the daemon assumes about the Postfix
    /// that asks it.
    public struct Zone: Sendable, Equatable {
        public init() {}
        public var strictTesting = false
        /// The policy fetch's time limit (connection and answer).
        public var timeout: Double = 4
        public var requireSNI = true
        public var tlsrpt = false
        /// This zone's Postfix runs `smtp_dns_support_level = dnssec`, so it does DANE: a domain
        /// whose every MX is authenticated by usable DANE TLSA records is answered `dane-only`
        /// (RFC 8461 §2: MTA-STS must not override DANE). Unset: the top-level `dane` (false).
        public var dnssec: Bool?
        /// This zone's Postfix (≥ 3.10.5, `smtp_tls_enforce_sts_mx_patterns = yes`) enforces the
        /// `mx_host_pattern=` attributes itself: they are sent with `policy_type=sts` even without
        /// `tlsrpt`. Otherwise a wildcard is answered with the MX hosts it covers (one label).
        public var enforceMXPatterns = false
        /// Postfix's own `smtp_tls_security_level` (`may` or `encrypt`) for this zone; unset: the
        /// top-level `policy_failure_level`.
        public var policyFailureLevel: String?
    }

    /// Whether `zone` does DANE (its own `dnssec`, else the top-level `dane`).
    public func dnssec(_ zone: Zone) -> Bool { zone.dnssec ?? dane }
    /// The failure level `zone` states (its own, else the top-level one).
    public func failureLevel(_ zone: Zone) -> String? { zone.policyFailureLevel ?? policyFailureLevel }
    /// Some zone does DANE: the resolver then looks at MX and TLSA records of policy domains.
    public var anyDNSSEC: Bool { dnssec(defaultZone) || zones.values.contains { dnssec($0) } }

    /// Postfix's socketmap client gives up after 100 s (`DICT_SOCKMAP_DEF_TIMEOUT`): every reply
    /// must come before.
    public static let postfixSocketmapTimeout: Double = 100
    /// The longest one DNS query can take: libresolv tries twice, the second try waiting twice
    /// as long (`dns_timeout` × 3).
    public var dnsWorst: Double { Double(dnsTimeout) * 3 }
    /// How long the policy store is waited for before a look-up goes live.
    public var storeTimeout: Double {
        if case .postgres(_, let t) = cache { return min(t, 2) }
        return 2
    }
    /// One look-up's whole chain, derived from the configured time-outs: the store, the
    /// `_mta-sts` record, the policy host's addresses, the fetch (the longest zone `timeout`),
    /// and in DNSSEC zones the MX, address and TLSA look-ups (each MX host's at once).
    public var lookupBudget: Double {
        let fetch = max(defaultZone.timeout, zones.values.map(\.timeout).max() ?? 0)
        let store: Double = { if case .memory = cache { return 0 } else { return storeTimeout } }()
        return store + dnsWorst * 2 + fetch + (anyDNSSEC ? dnsWorst * 3 : 0) + 1
    }
    /// The socketmap reply deadline: the budget and a margin, below Postfix's time-out.
    public var replyDeadline: Double { lookupBudget + 2 }

    public enum Cache: Sendable, Equatable {
        case memory(size: Int)
        case sqlite(path: String)
        case postgres(dsn: String, timeout: Double)
    }

    public var host: String? = "127.0.0.1"
    public var port: Int? = 8461
    public var path: String?
    public var socketMode: mode_t?
    public var socketOwner: String?
    public var reusePort = true
    public var shutdownTimeout: Double = 20
    public var cacheGrace: Double = 60
    public var proactiveEnabled = true
    public var proactiveInterval: Double = 60
    public var proactiveConcurrency = 16
    public var cache: Cache = .sqlite(path: DaemonConfig.defaultCachePath)
    public var defaultZone = Zone()
    public var zones: [String: Zone] = [:]
    // Our own keys.
    public var dnsServer: String?
    public var dnsTimeout = 5
    public var caFiles: [String] = []
    public var systemRoots = true
    public var policyPort = 443
    public var negativeTTL: Double = 300
    /// How long "no policy" is remembered after the `_mta-sts` look-up failed with nothing cached.
    public var dnsFailureTTL: Double = 60
    /// DANE precedence (RFC 8461 §2): answer `dane-only` where every MX has usable, validated
    /// TLSA records. Off by default: Postfix does DANE only with `smtp_dns_support_level = dnssec`,
    /// and without it a `dane-only` reply defers mail ("client TLS configuration problem").
    /// Turn it on only where Postfix runs with DNSSEC.
    public var dane = false
    public var metricsHost = "127.0.0.1"
    public var metricsPort: Int?
    public var maxConnections = 4_096
    public var maxRequestLength = 2_048
    public var idleTimeout: Double = 300
    /// The in-memory layer in front of SQLite/PostgreSQL (misses are read from the store).
    public var hotCacheSize = 10_000
    public var evictAfter: Double = 30 * 86_400
    /// The TLS security level Postfix itself uses (`smtp_tls_security_level`): `may` or
    /// `encrypt`. Only when it is stated does a tlsrpt zone answer a policy that cannot be used
    /// with `policy_failure=` (at exactly that level, so the reply never lowers Postfix's own);
    /// unset, such a domain gets `NOTFOUND` and Postfix applies its own level (RFC 8461 §3.3).
    public var policyFailureLevel: String?
    /// The sender's TLS-RPT: the libtlsrpt collector, report building and delivery.
    public var collector: CollectorSettings?
    public var reporting: ReportingSettings?
    public var tlsrptDatabase = DaemonConfig.defaultTLSRPTDatabase

    public static let defaultCachePath = "/var/lib/mtasts/policy-cache.db"

    public struct ConfigError: Error, CustomStringConvertible {
        public var file: String
        public var line: Int?
        public var message: String
        public init(file: String, line: Int?, message: String) {
            self.file = file
            self.line = line
            self.message = message
        }
        public var description: String { "\(file)\(line.map { ":\($0)" } ?? ""): \(message)" }
    }

    /// The zone a socketmap name selects; unknown names get the default zone (as the reference daemon).
    public func zone(_ name: String) -> Zone { zones[name] ?? defaultZone }

    public static func load(path: String) throws(ConfigError) -> DaemonConfig {
        try parse(try text(path), file: path)
    }

    /// A configuration file's text (shared by the daemon's and serve's configurations).
    public static func text(_ path: String) throws(ConfigError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(file: path, line: nil, message: "cannot read the configuration file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(file: path, line: nil, message: "the configuration file is not UTF-8")
        }
        return text
    }

    /// A configuration file's YAML tree (the daemon's and serve's). `Reader` reads every scalar
    /// as its text, by its own rules for numbers and booleans, so Yams's tag resolution is not
    /// used: its default resolver runs NSRegularExpressions (ICU) over each scalar, which would
    /// bring ICU's tables and heap into every daemon's memory (`.basic` resolves no tags).
    static func yaml(_ text: String, file: String) throws(ConfigError) -> Node? {
        do { return try Yams.compose(yaml: text, .basic) } catch {
            throw ConfigError(file: file, line: nil, message: "not valid YAML: \(error)")
        }
    }

    public static func parse(_ text: String, file: String) throws(ConfigError) -> DaemonConfig {
        let root = try yaml(text, file: file)
        var config = DaemonConfig()
        guard let root else { return config }  // empty file: every default
        let reader = Reader(file: file)
        let top = try reader.mapping(root, "the configuration")
        var hostSet = false, portSet = false
        for (keyNode, value) in top {
            let key = try reader.key(keyNode)
            switch key {
            case "host": config.host = try reader.string(value, key); hostSet = true
            case "port": config.port = try reader.int(value, key, 1...65_535); portSet = true
            case "path": config.path = try reader.string(value, key)
            case "mode": config.socketMode = try reader.mode(value, key)
            case "owner": config.socketOwner = try reader.string(value, key)
            case "reuse_port": config.reusePort = try reader.bool(value, key)
            case "shutdown_timeout": config.shutdownTimeout = try reader.double(value, key, 0...3600)
            case "cache_grace": config.cacheGrace = try reader.double(value, key, 0...86_400)
            case "proactive_policy_fetching":
                for (k, v) in try reader.mapping(value, key) {
                    let sub = try reader.key(k)
                    switch sub {
                    case "enabled": config.proactiveEnabled = try reader.bool(v, "\(key).\(sub)")
                    case "interval": config.proactiveInterval = try reader.double(v, "\(key).\(sub)", 1...31_557_600)
                    case "concurrency_limit": config.proactiveConcurrency = try reader.int(v, "\(key).\(sub)", 1...10_000)
                    case "grace_ratio": _ = try reader.double(v, "\(key).\(sub)", 1...1_000)  // accepted; refresh points are spread by domain instead
                    default: throw reader.unknown(k, sub, in: key)
                    }
                }
            case "cache": config.cache = try cache(value, reader)
            case "default_zone": config.defaultZone = try zone(value, reader, key)
            case "zones":
                for (k, v) in try reader.mapping(value, key) {
                    let name = try reader.key(k)
                    config.zones[name] = try zone(v, reader, "zones.\(name)")
                }
            case "dns_server": config.dnsServer = try reader.string(value, key)
            case "dns_timeout": config.dnsTimeout = try reader.int(value, key, 1...60)
            case "ca_file": config.caFiles = try reader.strings(value, key)
            case "system_roots": config.systemRoots = try reader.bool(value, key)
            case "policy_port": config.policyPort = try reader.int(value, key, 1...65_535)
            case "negative_cache_ttl": config.negativeTTL = try reader.double(value, key, 0...86_400)
            case "dns_failure_ttl": config.dnsFailureTTL = try reader.double(value, key, 0...3_600)
            case "dane": config.dane = try reader.bool(value, key)
            case "policy_failure_level": config.policyFailureLevel = try failureLevel(value, reader, key)
            case "metrics":
                for (k, v) in try reader.mapping(value, key) {
                    let sub = try reader.key(k)
                    switch sub {
                    case "host": config.metricsHost = try reader.string(v, "metrics.host")
                    case "port": config.metricsPort = try reader.int(v, "metrics.port", 0...65_535)
                    default: throw reader.unknown(k, sub, in: key)
                    }
                }
            case "limits":
                for (k, v) in try reader.mapping(value, key) {
                    let sub = try reader.key(k)
                    switch sub {
                    case "max_connections": config.maxConnections = try reader.int(v, "limits.\(sub)", 1...1_000_000)
                    case "max_request_length": config.maxRequestLength = try reader.int(v, "limits.\(sub)", 64...1_000_000)
                    case "idle_timeout": config.idleTimeout = try reader.double(v, "limits.\(sub)", 1...86_400)
                    case "hot_cache_size": config.hotCacheSize = try reader.int(v, "limits.\(sub)", 1...100_000_000)
                    case "evict_after": config.evictAfter = try reader.double(v, "limits.\(sub)", 60...31_557_600 * 10)
                    default: throw reader.unknown(k, sub, in: key)
                    }
                }
            case "collector": config.collector = try collector(value, reader)
            case "reporting": config.reporting = try reporting(value, reader)
            case "tlsrpt_database": config.tlsrptDatabase = try reader.string(value, key)
            default: throw reader.unknown(keyNode, key, in: nil)
            }
        }
        guard config.replyDeadline < postfixSocketmapTimeout else {
            throw ConfigError(file: file, line: nil, message: "one look-up may take \(config.lookupBudget.clean) s (dns_timeout \(config.dnsTimeout) s × 3 per query, the zone time-outs\(config.anyDNSSEC ? ", DANE look-ups" : "")), but Postfix's socketmap client waits 100 s at most: lower dns_timeout or the zone time-outs")
        }
        // The reference daemon: `path` alone means a unix socket only.
        if config.path != nil && !hostSet && !portSet {
            config.host = nil
            config.port = nil
        }
        return config
    }

    static func failureLevel(_ value: Node, _ reader: Reader, _ key: String) throws(ConfigError) -> String {
        let level = try reader.string(value, key)
        guard ["may", "encrypt"].contains(level) else {
            throw reader.error(value, "\(key) is the level Postfix itself uses (smtp_tls_security_level): may or encrypt\(level == "none" ? "; none would send mail in clear where Postfix alone would not" : "")")
        }
        return level
    }

    public static func zone(_ node: Node, _ reader: Reader, _ name: String) throws(ConfigError) -> Zone {
        var zone = Zone()
        for (k, v) in try reader.mapping(node, name) {
            let key = try reader.key(k)
            switch key {
            case "strict_testing": zone.strictTesting = try reader.bool(v, "\(name).\(key)")
            case "timeout": zone.timeout = try reader.double(v, "\(name).\(key)", 0.1...600)
            case "require_sni": zone.requireSNI = try reader.bool(v, "\(name).\(key)")
            case "tlsrpt": zone.tlsrpt = try reader.bool(v, "\(name).\(key)")
            case "dnssec": zone.dnssec = try reader.bool(v, "\(name).\(key)")
            case "enforce_mx_patterns": zone.enforceMXPatterns = try reader.bool(v, "\(name).\(key)")
            case "policy_failure_level": zone.policyFailureLevel = try failureLevel(v, reader, "\(name).\(key)")
            default: throw reader.unknown(k, key, in: name)
            }
        }
        return zone
    }

    public static func cache(_ node: Node, _ reader: Reader) throws(ConfigError) -> Cache {
        let map = try reader.mapping(node, "cache")
        var type = "internal"
        var typeNode = node
        var options: Node?
        for (k, v) in map {
            let key = try reader.key(k)
            switch key {
            case "type": type = try reader.string(v, "cache.type"); typeNode = v
            case "options": options = v
            default: throw reader.unknown(k, key, in: "cache")
            }
        }
        var values: [String: Node] = [:]
        var keyNodes: [(String, Node)] = []
        if let options {
            for (k, v) in try reader.mapping(options, "cache.options") {
                let key = try reader.key(k)
                values[key] = v
                keyNodes.append((key, k))
            }
        }
        func allow(_ keys: Set<String>) throws(ConfigError) {
            for (key, node) in keyNodes where !keys.contains(key) { throw reader.unknown(node, key, in: "cache.options (type \(type))") }
        }
        switch type {
        case "internal", "memory":
            try allow(["cache_size"])
            return .memory(size: try values["cache_size"].map { n throws(ConfigError) in try reader.int(n, "cache.options.cache_size", 1...100_000_000) } ?? 10_000)
        case "sqlite":
            try allow(["filename", "threads", "timeout"])
            if let t = values["threads"] { _ = try reader.int(t, "cache.options.threads", 1...1_024) }
            if let t = values["timeout"] { _ = try reader.double(t, "cache.options.timeout", 0...3_600) }
            let path = try values["filename"].map { n throws(ConfigError) in try reader.string(n, "cache.options.filename") } ?? defaultCachePath
            return .sqlite(path: path)
        case "postgres":
            try allow(["dsn", "timeout"])
            guard let d = values["dsn"] else { throw reader.error(node, "cache type postgres needs options.dsn (a libpq connection string or URI)") }
            let timeout = try values["timeout"].map { n throws(ConfigError) in try reader.double(n, "cache.options.timeout", 0.1...3_600) } ?? 5
            return .postgres(dsn: try reader.string(d, "cache.options.dsn"), timeout: timeout)
        case "redis", "redis_sentinel":
            throw reader.error(typeNode, "cache type '\(type)' is not supported: use type 'postgres' for a cache shared by several MTAs (or 'sqlite' for one host)")
        default:
            throw reader.error(typeNode, "unknown cache type '\(type)' (internal, sqlite or postgres)")
        }
    }

    /// Typed access to YAML nodes, errors with the line.
    public struct Reader {
        public var file: String
        public init(file: String) { self.file = file }

        public func error(_ node: Node, _ message: String) -> ConfigError {
            ConfigError(file: file, line: node.mark.map { $0.line }, message: message)
        }

        public func unknown(_ node: Node, _ key: String, in parent: String?) -> ConfigError {
            error(node, "unknown key '\(key)'\(parent.map { " in \($0)" } ?? "")")
        }

        public func mapping(_ node: Node, _ what: String) throws(ConfigError) -> Node.Mapping {
            if case .scalar(let s) = node, s.string.isEmpty || s.string == "~" || s.string == "null" { return Node.Mapping([]) }
            guard let m = node.mapping else { throw error(node, "\(what) must be a mapping") }
            return m
        }

        public func key(_ node: Node) throws(ConfigError) -> String {
            guard case .scalar(let s) = node else { throw error(node, "a key must be a plain string") }
            return s.string
        }

        public func scalar(_ node: Node, _ key: String, _ kind: String) throws(ConfigError) -> String {
            guard case .scalar(let s) = node else { throw error(node, "\(key) must be \(kind)") }
            return s.string
        }

        public func string(_ node: Node, _ key: String) throws(ConfigError) -> String {
            let s = try scalar(node, key, "a string")
            guard !s.isEmpty else { throw error(node, "\(key) must not be empty") }
            return s
        }

        public func strings(_ node: Node, _ key: String) throws(ConfigError) -> [String] {
            if case .sequence(let seq) = node {
                var out: [String] = []
                for n in seq { out.append(try string(n, key)) }
                return out
            }
            return [try string(node, key)]
        }

        public func bool(_ node: Node, _ key: String) throws(ConfigError) -> Bool {
            switch try scalar(node, key, "true or false").lowercased() {
            case "true", "yes", "on": return true
            case "false", "no", "off": return false
            default: throw error(node, "\(key) must be true or false")
            }
        }

        public func int(_ node: Node, _ key: String, _ range: ClosedRange<Int>) throws(ConfigError) -> Int {
            let s = try scalar(node, key, "a whole number")
            guard let v = Int(s), range.contains(v) else {
                throw error(node, "\(key) must be a whole number from \(range.lowerBound) to \(range.upperBound), not '\(s)'")
            }
            return v
        }

        public func double(_ node: Node, _ key: String, _ range: ClosedRange<Double>) throws(ConfigError) -> Double {
            let s = try scalar(node, key, "a number")
            guard let v = Double(s), v.isFinite, range.contains(v) else {
                throw error(node, "\(key) must be a number from \(range.lowerBound.clean) to \(range.upperBound.clean), not '\(s)'")
            }
            return v
        }

        /// A unix socket mode, octal as in YAML 1.1 (`0666`, `0o666`) or a string.
        public func mode(_ node: Node, _ key: String) throws(ConfigError) -> mode_t {
            var s = try scalar(node, key, "an octal mode")
            if s.hasPrefix("0o") { s.removeFirst(2) }
            guard let v = mode_t(s, radix: 8), v <= 0o7777 else { throw error(node, "\(key) must be an octal mode such as 0660, not '\(s)'") }
            return v
        }
    }
}

private extension Double {
    var clean: String { self == rounded() ? String(Int(self)) : String(self) }
}

extension DaemonConfig.ConfigError: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.configuration, description) }
}

extension ReportingSettings.Incomplete: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(.configuration, description) }
}
