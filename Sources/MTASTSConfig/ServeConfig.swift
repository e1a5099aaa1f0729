import Foundation
import MTASTSCore
import Yams

/// `mtasts serve`'s configuration (YAML). Every key is optional: an empty file (or none) serves
/// the report endpoint on 127.0.0.1:8080 over plain HTTP with an SQLite file.
public struct ServeConfig: Sendable {
    public init() {}

    public struct Certificate: Sendable, Equatable {
        /// Host names (SNI) this certificate is for; the first certificate is also the default.
        public var hosts: [String]
        public var certificate: String
        public var key: String
        public init(hosts: [String], certificate: String, key: String) {
            self.hosts = hosts
            self.certificate = certificate
            self.key = key
        }
    }

    public var listen: [(host: String, port: Int)] = [("127.0.0.1", 8080)]
    public var database = ServeConfig.defaultDatabase
    public var certificates: [Certificate] = []
    /// Policy text per policy domain (lowercased), served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt.
    public var policies: [String: String] = [:]
    public var reportPath = "/tlsrpt"
    public var maxCompressed = 1 * 1024 * 1024
    public var maxDecompressed = 10 * 1024 * 1024
    /// Bearer token for /api/ (nil: the API is open to whoever reaches the listener).
    public var apiToken: String?
    /// Answer `/api/` and `/metrics` without a token on a listener that is not loopback.
    public var apiPublic = false
    /// Connections at once, and time limits in seconds (see `limits:` in contrib/mtasts-serve.yml).
    public var maxConnections = 1_024
    public var maxPerAddress = 64
    public var idleTimeout: Double = 30
    public var headerTimeout: Double = 10
    public var bodyTimeout: Double = 30
    public var handshakeTimeout: Double = 10
    /// RFC 8460 §3 / CONFORMANCE §4 item 30: report mail without a valid signature is ignored.
    public var dkimPolicy = DKIMPolicy.require
    public var dnsServer: String?
    /// Where messages that are not reports (or refused by the DKIM policy) are kept; nil: dropped after logging.
    public var keepRejected: String?

    public enum DKIMPolicy: String, Sendable { case require, record, ignore }

    /// The dashboard (`dashboard:`): HTML pages at `/` of every host that is not a policy host.
    public struct Dashboard: Sendable {
        public var enabled = true
        /// Users for HTTP basic auth, with bcrypt hashes (`htpasswd -nbB USER PASSWORD`).
        public var users: [String: String] = [:]
        /// The address the dashboard is reached at from outside (links in alerts), without a trailing slash.
        public var publicURL: String?
        /// Answer unprotected on a loopback listener even when the server hosts policies (and so
        /// may sit behind a proxy that forwards outside requests to loopback).
        public var trustLoopback = false
        public init() {}
    }

    /// Periodic end-to-end checks of the owner's domains (`watch:`).
    public struct Watch: Sendable {
        public var domains: [String] = []
        public var interval: Double = 3_600
        public var concurrency = 4
        public var dnsServer: String?
        public var caFiles: [String] = []
        public var policyPort = 443
        public var smtpPort = 25
        public var smtp = true
        public var timeout = 10
        public init() {}
    }

    /// Alerts (`alerts:`): where they go and what crosses a threshold.
    public struct Alerts: Sendable {
        public var webhooks: [String] = []
        public var mailTo: [String] = []
        public var mailFrom = "mtasts@localhost"
        public var mailServer: (host: String, port: Int)?
        public var mailTLS = "starttls"
        public var mailUsername: String?
        public var mailPassword: String?
        /// Extra trust anchors for webhooks and the mail server (PEM).
        public var caFiles: [String] = []
        /// A domain's daily success rate under this percentage alerts (nil: never).
        public var successRateBelow: Double? = 95
        /// One result type's failures on the newest day at least this many times its daily
        /// average over the 7 days before, and at least `failureJumpMinimum` sessions.
        public var failureJump: Double = 3
        public var failureJumpMinimum: Int64 = 10
        public var newFailureTypes = true
        public var newOrganizations = true
        /// A policy host or MX certificate expiring within this many days alerts.
        public var certificateDays = 14
        public var checkErrors = true
        public var readiness = true
        /// Seconds between evaluations of the stored reports.
        public var interval: Double = 300
        /// Domains whose reports alert, beside `policies` and `watch.domains` (anyone can POST a
        /// report about any domain: only the owner's should alert).
        public var domains: [String] = []
        public var configured: Bool { !webhooks.isEmpty || !mailTo.isEmpty }
        public init() {}
    }

    public var dashboard = Dashboard()
    public var watch = Watch()
    public var alerts = Alerts()

    /// The owner's domains for alerts: the hosted policies, the watched domains, `alerts.domains`;
    /// nil when none is configured (then every domain in the stored reports alerts).
    public var alertDomains: Set<String>? {
        let all = Set(policies.keys).union(watch.domains).union(alerts.domains)
        return all.isEmpty ? nil : all
    }

    public static let defaultDatabase = "/var/lib/mtasts/reports.db"
    public typealias ConfigError = DaemonConfig.ConfigError

    public static func load(path: String) throws(ConfigError) -> ServeConfig {
        try parse(try DaemonConfig.text(path), file: path)
    }

    public static func parse(_ text: String, file: String) throws(ConfigError) -> ServeConfig {
        let root = try DaemonConfig.yaml(text, file: file)
        var config = ServeConfig()
        guard let root else { return config }
        let reader = DaemonConfig.Reader(file: file)
        let directory = (file as NSString).deletingLastPathComponent
        func path(_ p: String) -> String { p.hasPrefix("/") || directory.isEmpty ? p : directory + "/" + p }
        for (keyNode, value) in try reader.mapping(root, "the configuration") {
            let key = try reader.key(keyNode)
            switch key {
            case "listen":
                config.listen = []
                for item in try reader.strings(value, key) {
                    guard let address = address(item) else { throw reader.error(value, addressError(item)) }
                    config.listen.append(address)
                }
            case "database": config.database = try reader.string(value, key)
            case "tls":
                guard case .sequence(let items) = value else { throw reader.error(value, "tls must be a list of {hosts, certificate, key}") }
                for item in items {
                    var hosts: [String] = [], cert: String?, keyFile: String?
                    for (k, v) in try reader.mapping(item, "a tls entry") {
                        let sub = try reader.key(k)
                        switch sub {
                        case "hosts": hosts = try reader.strings(v, "tls.hosts").map { $0.lowercased() }
                        case "certificate": cert = path(try reader.string(v, "tls.certificate"))
                        case "key": keyFile = path(try reader.string(v, "tls.key"))
                        default: throw reader.unknown(k, sub, in: "tls")
                        }
                    }
                    guard let cert, let keyFile else { throw reader.error(item, "a tls entry needs certificate and key (PEM files)") }
                    config.certificates.append(Certificate(hosts: hosts, certificate: cert, key: keyFile))
                }
            case "policies":
                for (k, v) in try reader.mapping(value, key) {
                    let domain = try reader.key(k).lowercased()
                    do { _ = try DomainName(domain) } catch { throw reader.error(k, "'\(domain)' is not a domain name") }
                    let text = try policyText(v, reader, domain: domain, path: path)
                    let parsed = STSPolicy.parse(text)
                    if let error = parsed.diagnostics.first(where: { $0.severity == .error }) {
                        throw reader.error(v, "the policy for \(domain) is not valid: \(error.message)")
                    }
                    config.policies[domain] = text
                }
            case "reports":
                for (k, v) in try reader.mapping(value, key) {
                    let sub = try reader.key(k)
                    switch sub {
                    case "path":
                        config.reportPath = try reader.string(v, "reports.path")
                        guard config.reportPath.hasPrefix("/") else { throw reader.error(v, "reports.path must start with /") }
                    case "max_compressed": config.maxCompressed = try reader.int(v, "reports.max_compressed", 1_024...1_073_741_824)
                    case "max_decompressed": config.maxDecompressed = try reader.int(v, "reports.max_decompressed", 1_024...1_073_741_824)
                    case "api_token": config.apiToken = try reader.string(v, "reports.api_token")
                    case "api_public": config.apiPublic = try reader.bool(v, "reports.api_public")
                    case "keep_rejected": config.keepRejected = path(try reader.string(v, "reports.keep_rejected"))
                    default: throw reader.unknown(k, sub, in: key)
                    }
                }
            case "limits":
                for (k, v) in try reader.mapping(value, key) {
                    let sub = try reader.key(k)
                    switch sub {
                    case "max_connections": config.maxConnections = try reader.int(v, "limits.max_connections", 1...1_000_000)
                    case "max_per_address": config.maxPerAddress = try reader.int(v, "limits.max_per_address", 1...1_000_000)
                    case "idle_timeout": config.idleTimeout = try reader.double(v, "limits.idle_timeout", 0.1...86_400)
                    case "header_timeout": config.headerTimeout = try reader.double(v, "limits.header_timeout", 0.1...3_600)
                    case "body_timeout": config.bodyTimeout = try reader.double(v, "limits.body_timeout", 0.1...3_600)
                    case "handshake_timeout": config.handshakeTimeout = try reader.double(v, "limits.handshake_timeout", 0.1...3_600)
                    default: throw reader.unknown(k, sub, in: key)
                    }
                }
            case "dkim":
                for (k, v) in try reader.mapping(value, key) {
                    let sub = try reader.key(k)
                    switch sub {
                    case "policy":
                        let s = try reader.string(v, "dkim.policy")
                        guard let p = DKIMPolicy(rawValue: s) else { throw reader.error(v, "dkim.policy must be require, record or ignore, not '\(s)'") }
                        config.dkimPolicy = p
                    case "dns_server": config.dnsServer = try reader.string(v, "dkim.dns_server")
                    default: throw reader.unknown(k, sub, in: key)
                    }
                }
            case "dashboard":
                for (k, v) in try reader.mapping(value, key) {
                    let sub = try reader.key(k)
                    switch sub {
                    case "enabled": config.dashboard.enabled = try reader.bool(v, "dashboard.enabled")
                    case "trust_loopback": config.dashboard.trustLoopback = try reader.bool(v, "dashboard.trust_loopback")
                    case "public_url":
                        var url = try reader.string(v, "dashboard.public_url")
                        while url.hasSuffix("/") { url.removeLast() }
                        guard url.hasPrefix("https://") || url.hasPrefix("http://") else { throw reader.error(v, "dashboard.public_url must be an http(s) URL") }
                        config.dashboard.publicURL = url
                    case "users":
                        for (uk, uv) in try reader.mapping(v, "dashboard.users") {
                            let user = try reader.key(uk)
                            let hash = try reader.string(uv, "dashboard.users.\(user)")
                            guard hash.hasPrefix("$2a$") || hash.hasPrefix("$2b$") || hash.hasPrefix("$2y$") else {
                                throw reader.error(uv, "dashboard.users.\(user) must be a bcrypt hash (htpasswd -nbB \(user) PASSWORD prints one), not a password")
                            }
                            // A cost past 14 makes every log-in take seconds of a blocking thread.
                            guard let cost = Int(hash.dropFirst(4).prefix(2)), (4...14).contains(cost) else {
                                throw reader.error(uv, "dashboard.users.\(user): the bcrypt cost must be 4 to 14 (mtasts serve --hash-password uses 12)")
                            }
                            guard !user.contains(":") else { throw reader.error(uk, "a user name cannot contain ':'") }
                            config.dashboard.users[user] = hash
                        }
                    default: throw reader.unknown(k, sub, in: key)
                    }
                }
            case "watch":
                for (k, v) in try reader.mapping(value, key) {
                    let sub = try reader.key(k)
                    switch sub {
                    case "domains":
                        config.watch.domains = try reader.strings(v, "watch.domains").map { $0.lowercased() }
                        for d in config.watch.domains where (try? DomainName(d)) == nil { throw reader.error(v, "'\(d)' is not a domain name") }
                    case "interval": config.watch.interval = try reader.double(v, "watch.interval", 10...604_800)
                    case "concurrency": config.watch.concurrency = try reader.int(v, "watch.concurrency", 1...256)
                    case "dns_server": config.watch.dnsServer = try reader.string(v, "watch.dns_server")
                    case "ca_file": config.watch.caFiles = try reader.strings(v, "watch.ca_file").map(path)
                    case "policy_port": config.watch.policyPort = try reader.int(v, "watch.policy_port", 1...65_535)
                    case "smtp_port": config.watch.smtpPort = try reader.int(v, "watch.smtp_port", 1...65_535)
                    case "smtp": config.watch.smtp = try reader.bool(v, "watch.smtp")
                    case "timeout": config.watch.timeout = try reader.int(v, "watch.timeout", 1...300)
                    default: throw reader.unknown(k, sub, in: key)
                    }
                }
            case "alerts":
                for (k, v) in try reader.mapping(value, key) {
                    let sub = try reader.key(k)
                    switch sub {
                    case "webhook":
                        config.alerts.webhooks = try reader.strings(v, "alerts.webhook")
                        for w in config.alerts.webhooks where !w.lowercased().hasPrefix("https://") { throw reader.error(v, "alerts.webhook must be https URLs, not '\(w)'") }
                    case "mail":
                        for (mk, mv) in try reader.mapping(v, "alerts.mail") {
                            let m = try reader.key(mk)
                            switch m {
                            case "to":
                                config.alerts.mailTo = try reader.strings(mv, "alerts.mail.to")
                                for a in config.alerts.mailTo {
                                    do { _ = try MailAddress.validate(a) } catch { throw reader.error(mv, "alerts.mail.to: '\(a)' is not a mailbox: \(error.reason)") }
                                }
                            case "from":
                                config.alerts.mailFrom = try reader.string(mv, "alerts.mail.from")
                                do { _ = try MailAddress.validate(config.alerts.mailFrom) } catch { throw reader.error(mv, "alerts.mail.from is not a mailbox: \(error.reason)") }
                            case "server":
                                let s = try reader.string(mv, "alerts.mail.server")
                                guard let a = address(s), a.host != "0.0.0.0" else { throw reader.error(mv, "alerts.mail.server must be HOST:PORT, not '\(s)'") }
                                config.alerts.mailServer = a
                            case "tls":
                                let t = try reader.string(mv, "alerts.mail.tls")
                                guard ["starttls", "implicit", "none"].contains(t) else { throw reader.error(mv, "alerts.mail.tls must be starttls, implicit or none") }
                                config.alerts.mailTLS = t
                            case "username": config.alerts.mailUsername = try reader.string(mv, "alerts.mail.username")
                            case "password_file":
                                let file = path(try reader.string(mv, "alerts.mail.password_file"))
                                guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                                    throw reader.error(mv, "cannot read alerts.mail.password_file \(file)")
                                }
                                config.alerts.mailPassword = text.trimmingCharacters(in: .newlines)
                            default: throw reader.unknown(mk, m, in: "alerts.mail")
                            }
                        }
                        guard !config.alerts.mailTo.isEmpty, config.alerts.mailServer != nil else { throw reader.error(v, "alerts.mail needs to and server") }
                    case "ca_file": config.alerts.caFiles = try reader.strings(v, "alerts.ca_file").map(path)
                    case "success_rate_below":
                        if case .scalar(let sc) = v, ["off", "false", "none"].contains(sc.string.lowercased()) { config.alerts.successRateBelow = nil } else {
                            config.alerts.successRateBelow = try reader.double(v, "alerts.success_rate_below", 0...100)
                        }
                    case "failure_jump": config.alerts.failureJump = try reader.double(v, "alerts.failure_jump", 1...1_000_000)
                    case "failure_jump_minimum": config.alerts.failureJumpMinimum = Int64(try reader.int(v, "alerts.failure_jump_minimum", 1...1_000_000_000))
                    case "new_failure_types": config.alerts.newFailureTypes = try reader.bool(v, "alerts.new_failure_types")
                    case "new_organizations": config.alerts.newOrganizations = try reader.bool(v, "alerts.new_organizations")
                    case "certificate_days": config.alerts.certificateDays = try reader.int(v, "alerts.certificate_days", 0...3_650)
                    case "check_errors": config.alerts.checkErrors = try reader.bool(v, "alerts.check_errors")
                    case "readiness": config.alerts.readiness = try reader.bool(v, "alerts.readiness")
                    case "interval": config.alerts.interval = try reader.double(v, "alerts.interval", 1...86_400)
                    case "domains":
                        config.alerts.domains = try reader.strings(v, "alerts.domains").map { $0.lowercased() }
                        for d in config.alerts.domains where (try? DomainName(d)) == nil { throw reader.error(v, "'\(d)' is not a domain name") }
                    default: throw reader.unknown(k, sub, in: key)
                    }
                }
            default: throw reader.unknown(keyNode, key, in: nil)
            }
        }
        return config
    }

    /// `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all addresses).
    public static func address(_ item: String) -> (host: String, port: Int)? {
        guard let colon = item.lastIndex(of: ":"), let port = Int(item[item.index(after: colon)...]), (0...65_535).contains(port) else { return nil }
        var host = String(item[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    public static func addressError(_ item: String) -> String { "listen must be HOST:PORT (such as 127.0.0.1:8080 or [::]:443), not '\(item)'" }

    /// A policy given as its text (what `mtasts policy init` prints), as `{file: PATH}`, as
    /// `{policy: TEXT}` or as `{mode, mx, max_age}`.
    private static func policyText(_ node: Node, _ reader: DaemonConfig.Reader, domain: String, path: (String) -> String) throws(ConfigError) -> String {
        if case .scalar(let s) = node {
            return normalise(s.string)
        }
        var mode = "testing", mx: [String] = [], maxAge = 604_800
        var text: String?
        for (k, v) in try reader.mapping(node, "the policy for \(domain)") {
            let sub = try reader.key(k)
            switch sub {
            case "policy": text = try reader.string(v, "policies.\(domain).policy")
            case "file":
                let file = path(try reader.string(v, "policies.\(domain).file"))
                guard let data = FileManager.default.contents(atPath: file), let s = String(data: data, encoding: .utf8) else {
                    throw reader.error(v, "cannot read the policy file \(file)")
                }
                text = s
            case "mode": mode = try reader.string(v, "policies.\(domain).mode")
            case "mx": mx = try reader.strings(v, "policies.\(domain).mx")
            case "max_age": maxAge = try reader.int(v, "policies.\(domain).max_age", 0...31_557_600)
            default: throw reader.unknown(k, sub, in: "policies.\(domain)")
            }
        }
        if let text { return normalise(text) }
        guard !mx.isEmpty || mode == "none" else { throw reader.error(node, "the policy for \(domain) needs mx (or policy, or file)") }
        return (["version: STSv1", "mode: \(mode)"] + mx.map { "mx: \($0)" } + ["max_age: \(maxAge)"]).joined(separator: "\r\n") + "\r\n"
    }

    /// Served with CRLF line endings (RFC 8461 §3.2 allows LF too; CRLF is what every client reads).
    private static func normalise(_ text: String) -> String {
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
            .map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
        var kept = lines
        while let last = kept.last, last.isEmpty { kept.removeLast() }
        return kept.joined(separator: "\r\n") + "\r\n"
    }
}
