import Foundation
import Yams

/// The sender's TLS-RPT settings in `mtasts daemon`'s configuration: `collector:` (the libtlsrpt
/// socket), `reporting:` (who we are, how reports go out) and `tlsrpt_database:`.
public struct CollectorSettings: Sendable, Equatable {
    public init() {}
    public init(socket: String) { self.socket = socket }
    /// The unix datagram socket Postfix's libtlsrpt writes to (`smtp_tlsrpt_socket_name`).
    public var socket = "/run/mtasts/tlsrpt.sock"
    /// The socket's mode: owner and group may write, nobody else (the group is the one Postfix's
    /// smtp(8) runs as: `group: postfix`). The socket is created under a umask that grants nothing
    /// more, so it is never world-writable, not even for a moment.
    public var mode: mode_t = 0o660
    public var owner: String?
    public var group: String?
    /// Bounds on what waits in memory: datagrams read but not yet folded into a batch (entries and
    /// bytes), and datagrams held in a batch while the database refuses commits. Past a bound,
    /// datagrams are dropped and counted (`mtasts_tlsrpt_datagrams_dropped_total`).
    public var maxQueued = 100_000
    public var maxQueuedBytes = 32 << 20
    public var maxBacklog = 5_000_000
    /// The quarantine file stops growing at this size; at most `quarantineRate` lines a second.
    public var quarantineMaxBytes = 64 << 20
    public var quarantineRate = 100
    /// Commit every `batchSize` datagrams or `flushInterval` seconds, whichever comes first. A
    /// commit costs one upsert per distinct row, so at high rates fewer, larger commits do much
    /// less work for the same datagrams: once a second up to 20,000 datagrams a second (a kill -9
    /// loses at most the last second either way).
    public var batchSize = 20_000
    public var flushInterval: Double = 1
    /// Socket receive buffer asked for (the kernel caps it at net.core.rmem_max unless root).
    public var receiveBuffer = 8 << 20
    /// Malformed datagrams are appended here (one per line, hex of the bytes), when set.
    public var quarantine: String?
}

public struct ReportingSettings: Sendable, Equatable {
    public init() {}
    public var organization: String?
    public var contact: String?
    public var submitter: String?
    public var from: String?
    /// Build and send each completed day's reports from inside the daemon.
    public var sendDaily = true
    /// Random delay after 00:00 UTC before building (spreads senders; RFC 8460 §4.1 asks for it).
    public var spread: Double = 3_600
    public var node = ProcessInfo.processInfo.hostName
    public var httpsTimeout: Double = 30
    /// An https rua may name a loopback, private, link-local or unique-local address (by literal
    /// or by what its name resolves to). Off: a stranger's record cannot aim our POSTs at our own network.
    public var allowPrivateRUA = false
    /// First retry delay; it doubles per attempt (RFC 8460 §5.5), giving up after 24 hours.
    public var firstRetry: Double = 60
    public var caFiles: [String] = []
    public var transport = "sendmail"
    public var sendmail = "/usr/sbin/sendmail"
    public var smtpHost: String?
    public var smtpPort = 587
    public var smtpTLS = "starttls"
    public var smtpUser: String?
    public var smtpPassword: String?
    public var dkimDomain: String?
    public var dkimSelector = "tlsrpt"
    public var dkimKey: String?
}

extension DaemonConfig {
    public static let defaultTLSRPTDatabase = "/var/lib/mtasts/tlsrpt.db"

    public static func collector(_ node: Node, _ reader: Reader) throws(ConfigError) -> CollectorSettings {
        var c = CollectorSettings()
        var batchSizeGiven = false
        for (k, v) in try reader.mapping(node, "collector") {
            let key = try reader.key(k)
            let name = "collector.\(key)"
            switch key {
            case "socket": c.socket = try reader.string(v, name)
            case "mode": c.mode = try reader.mode(v, name)
            case "owner": c.owner = try reader.string(v, name)
            case "group": c.group = try reader.string(v, name)
            case "batch_size":
                c.batchSize = try reader.int(v, name, 1...1_000_000)
                batchSizeGiven = true
            case "flush_interval": c.flushInterval = try reader.double(v, name, 0.01...3_600)
            case "receive_buffer": c.receiveBuffer = try reader.int(v, name, 65_536...1 << 30)
            case "quarantine": c.quarantine = try reader.string(v, name)
            case "max_queued": c.maxQueued = try reader.int(v, name, 1_000...10_000_000)
            case "max_queued_bytes": c.maxQueuedBytes = try reader.int(v, name, 1 << 20...1 << 32)
            case "max_backlog": c.maxBacklog = try reader.int(v, name, 1_000...1_000_000_000)
            case "quarantine_max_bytes": c.quarantineMaxBytes = try reader.int(v, name, 0...1 << 40)
            case "quarantine_rate": c.quarantineRate = try reader.int(v, name, 0...1_000_000)
            default: throw reader.unknown(k, key, in: "collector")
            }
        }
        if !batchSizeGiven { c.batchSize = min(c.batchSize, c.maxBacklog) }  // (the default never refuses a small backlog)
        guard c.batchSize <= c.maxBacklog else {
            throw reader.error(node, "collector.batch_size (\(c.batchSize)) is above collector.max_backlog (\(c.maxBacklog)): datagrams would be dropped in normal operation")
        }
        return c
    }

    public static func reporting(_ node: Node, _ reader: Reader) throws(ConfigError) -> ReportingSettings {
        var r = ReportingSettings()
        for (k, v) in try reader.mapping(node, "reporting") {
            let key = try reader.key(k)
            let name = "reporting.\(key)"
            switch key {
            case "organization": r.organization = try reader.string(v, name)
            case "contact": r.contact = try reader.string(v, name)
            case "submitter": r.submitter = try reader.string(v, name).lowercased()
            case "from": r.from = try reader.string(v, name)
            case "send_daily": r.sendDaily = try reader.bool(v, name)
            case "spread": r.spread = try reader.double(v, name, 0...43_200)
            case "node": r.node = try reader.string(v, name)
            case "https_timeout": r.httpsTimeout = try reader.double(v, name, 0.1...600)
            case "allow_private_rua": r.allowPrivateRUA = try reader.bool(v, name)
            case "first_retry": r.firstRetry = try reader.double(v, name, 0...86_400)
            case "ca_file": r.caFiles = try reader.strings(v, name)
            case "mail":
                for (mk, mv) in try reader.mapping(v, name) {
                    let sub = try reader.key(mk)
                    let subName = "\(name).\(sub)"
                    switch sub {
                    case "transport":
                        r.transport = try reader.string(mv, subName)
                        guard ["sendmail", "smtp"].contains(r.transport) else { throw reader.error(mv, "\(subName) must be sendmail or smtp") }
                    case "sendmail": r.sendmail = try reader.string(mv, subName)
                    case "host": r.smtpHost = try reader.string(mv, subName)
                    case "port": r.smtpPort = try reader.int(mv, subName, 1...65_535)
                    case "tls":
                        r.smtpTLS = try reader.string(mv, subName)
                        guard ["starttls", "implicit", "none"].contains(r.smtpTLS) else { throw reader.error(mv, "\(subName) must be starttls, implicit or none") }
                    case "username": r.smtpUser = try reader.string(mv, subName)
                    case "password": r.smtpPassword = try reader.string(mv, subName)
                    default: throw reader.unknown(mk, sub, in: name)
                    }
                }
            case "dkim":
                for (dk, dv) in try reader.mapping(v, name) {
                    let sub = try reader.key(dk)
                    switch sub {
                    case "domain": r.dkimDomain = try reader.string(dv, "\(name).domain").lowercased()
                    case "selector": r.dkimSelector = try reader.string(dv, "\(name).selector")
                    case "key": r.dkimKey = try reader.string(dv, "\(name).key")
                    default: throw reader.unknown(dk, sub, in: name)
                    }
                }
            default: throw reader.unknown(k, key, in: "reporting")
            }
        }
        if r.transport == "smtp" && r.smtpHost == nil { throw reader.error(node, "reporting.mail.transport smtp needs reporting.mail.host") }
        if r.dkimKey != nil && r.dkimDomain == nil, let submitter = r.submitter { r.dkimDomain = submitter }
        return r
    }
}

extension ReportingSettings {
    public struct Incomplete: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }
}
