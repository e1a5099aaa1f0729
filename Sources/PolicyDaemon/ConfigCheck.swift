import Foundation
import MTASTSConfig
import MTASTSCore

/// `mtasts daemon --check-config`: what each zone assumes about the Postfix that asks it, the
/// `main.cf` lines that go with it, and, where `postconf` can be run, where Postfix says
/// otherwise. A reply is only as safe as these assumptions: a `dane-only` to a Postfix without
/// DNSSEC defers mail, a `policy_failure` reply at `may` lowers a Postfix at `encrypt`, TLSRPT
/// attributes are refused by Postfix ≤ 3.9.
public struct ConfigCheck: Sendable {
    public enum Level: String, Sendable { case error, warning, note }

    public struct Finding: Sendable {
        public var level: Level
        public var zone: String?
        public var message: String
    }

    public struct ZoneReport: Sendable {
        public var name: String
        public var assumptions: [String]
        public var mainCF: [String]
    }

    public var zones: [ZoneReport] = []
    public var findings: [Finding] = []
    /// Postfix's parameters as `postconf` printed them (nil: not run).
    public var postfixVersion: String?
    public var lookupBudget: Double = 0
    public var replyDeadline: Double = 0

    public var hasErrors: Bool { findings.contains { $0.level == .error } }

    /// The zone names, default first.
    static func names(_ config: DaemonConfig) -> [String] { ["(default)"] + config.zones.keys.sorted() }

    /// Checks `config`; `postconf` is Postfix's parameters (`name = value`), or why they could not
    /// be read.
    public static func run(_ config: DaemonConfig, postconf: Result<[String: String], PostconfError>) -> ConfigCheck {
        var check = ConfigCheck()
        check.lookupBudget = config.lookupBudget
        check.replyDeadline = config.replyDeadline
        let table: String = {
            if let host = config.host, let port = config.port { return "socketmap:inet:\(host):\(port)" }
            if let path = config.path { return "socketmap:unix:\(path)" }
            return "socketmap:inet:127.0.0.1:8461"
        }()
        for name in names(config) {
            let zone = name == "(default)" ? config.defaultZone : config.zone(name)
            let mapName = name == "(default)" ? "postfix" : name
            var assumptions: [String] = []
            var lines = ["smtp_tls_policy_maps = \(table):\(mapName)"]
            if config.dnssec(zone) {
                assumptions.append("Postfix does DANE (smtp_dns_support_level = dnssec): a domain whose every MX is authenticated by usable DANE-TA/DANE-EE records gets dane-only (RFC 8461 §2); a DANE look-up that fails with nothing known gets TEMP")
                lines.append("smtp_dns_support_level = dnssec")
            } else {
                assumptions.append("Postfix does no DANE: no reply depends on TLSA records")
            }
            if let level = config.failureLevel(zone) {
                assumptions.append("Postfix's own level is smtp_tls_security_level = \(level)" + (zone.tlsrpt ? ": a policy that cannot be used is answered '\(level) policy_failure=…' for the report" : ""))
                lines.append("smtp_tls_security_level = \(level)")
            } else {
                assumptions.append("a policy that cannot be used is NOTFOUND: Postfix applies its own level (RFC 8461 §3.3)")
            }
            if zone.tlsrpt {
                assumptions.append("Postfix ≥ 3.10 with TLSRPT: replies carry policy_type=sts and the policy for its reports")
                lines.append("smtp_tlsrpt_enable = yes")
                if let socket = config.collector?.socket { lines.append("smtp_tlsrpt_socket_name = \(socket)") }
            }
            if zone.enforceMXPatterns {
                assumptions.append("Postfix ≥ 3.10.5 enforces mx_host_pattern=: a wildcard is sent as it is")
                lines.append("smtp_tls_enforce_sts_mx_patterns = yes")
            } else {
                assumptions.append("a wildcard mx (*.example.com) is answered with the MX hosts it covers (one label, RFC 8461 §4.1)")
            }
            assumptions.append("policy fetch time-out \(zone.timeout.formatted) s")
            check.zones.append(ZoneReport(name: name, assumptions: assumptions, mainCF: lines))
        }
        check.findings.append(Finding(level: .note, zone: nil, message: "one look-up takes at most \(check.lookupBudget.formatted) s; the reply deadline is \(check.replyDeadline.formatted) s (Postfix's socketmap client waits 100 s)"))

        let postfix: [String: String]
        switch postconf {
        case .failure(let error):
            check.findings.append(Finding(level: .note, zone: nil, message: "Postfix not compared: \(error.description)"))
            return check
        case .success(let p): postfix = p
        }
        check.postfixVersion = postfix["mail_version"]
        let version = Self.version(postfix["mail_version"] ?? "")
        let maps = postfix["smtp_tls_policy_maps"] ?? ""
        // The zones Postfix asks: `socketmap:…:NAME` entries of smtp_tls_policy_maps.
        let asked = maps.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" }).compactMap { item -> String? in
            guard item.hasPrefix("socketmap:"), let colon = item.lastIndex(of: ":") else { return nil }
            return String(item[item.index(after: colon)...])
        }
        if asked.isEmpty {
            check.findings.append(Finding(level: .warning, zone: nil, message: "Postfix's smtp_tls_policy_maps names no socketmap ('\(maps)'): it does not ask this daemon"))
        }
        let dnsLevel = postfix["smtp_dns_support_level"] ?? ""
        let tlsLevel = postfix["smtp_tls_security_level"] ?? ""
        for name in Array(Set(asked)).sorted() {
            let zone = config.zone(name)
            func error(_ m: String) { check.findings.append(Finding(level: .error, zone: name, message: m)) }
            func warning(_ m: String) { check.findings.append(Finding(level: .warning, zone: name, message: m)) }
            if config.dnssec(zone), dnsLevel != "dnssec" {
                error("the zone says Postfix does DANE (dnssec), but smtp_dns_support_level is '\(dnsLevel)': dane-only replies would defer mail with 4.7.5")
            }
            if !config.dnssec(zone), dnsLevel == "dnssec" {
                warning("Postfix does DANE (smtp_dns_support_level = dnssec) but the zone does not say so (dnssec: true): MTA-STS replies would override DANE (RFC 8461 §2)")
            }
            if let level = config.failureLevel(zone), level != (tlsLevel.isEmpty ? "none" : tlsLevel) {
                error("the zone states Postfix's level is '\(level)', but smtp_tls_security_level is '\(tlsLevel)': policy_failure replies would change Postfix's level")
            }
            if zone.tlsrpt, version.lexicographicallyPrecedes([3, 10]) {
                error("tlsrpt: Postfix \(postfix["mail_version"] ?? "?") refuses the TLSRPT attributes (they need Postfix 3.10 or later)")
            } else if zone.tlsrpt, postfix["smtp_tlsrpt_enable"] != "yes" {
                warning("tlsrpt: smtp_tlsrpt_enable is not yes: Postfix sends no TLS results")
            }
            if zone.enforceMXPatterns {
                if version.lexicographicallyPrecedes([3, 10, 5]) {
                    error("enforce_mx_patterns: Postfix \(postfix["mail_version"] ?? "?") does not enforce mx_host_pattern= (3.10.5 or later): a wildcard would accept any depth")
                } else if postfix["smtp_tls_enforce_sts_mx_patterns"] != "yes" {
                    error("enforce_mx_patterns: smtp_tls_enforce_sts_mx_patterns is not yes: a wildcard would accept any depth")
                }
            }
        }
        return check
    }

    /// "3.7.11" → [3, 7, 11].
    static func version(_ text: String) -> [Int] {
        text.split(separator: ".").map { Int($0.prefix(while: \.isNumber)) ?? 0 }
    }

    public struct PostconfError: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Runs `postconf` (`-c DIR` when given) and reads its `name = value` lines.
    public static func postconf(_ program: String = "/usr/sbin/postconf", configDirectory: String? = nil) -> Result<[String: String], PostconfError> {
        guard FileManager.default.isExecutableFile(atPath: program) else { return .failure(PostconfError(description: "\(program) is not installed")) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = configDirectory.map { ["-c", $0] } ?? []
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch { return .failure(PostconfError(description: "cannot run \(program): \(error)")) }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let complaint = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            return .failure(PostconfError(description: "postconf failed: \(complaint.trimmingCharacters(in: .whitespacesAndNewlines))"))
        }
        var values: [String: String] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            guard let eq = line.range(of: " = ") else { continue }
            values[String(line[..<eq.lowerBound])] = String(line[eq.upperBound...])
        }
        return .success(values)
    }

    public var json: JSONValue {
        .object([
            JSONMember("valid", .bool(!hasErrors)),
            JSONMember("postfix_version", postfixVersion.map(JSONValue.string) ?? .null),
            JSONMember("lookup_budget_seconds", .double(lookupBudget)),
            JSONMember("reply_deadline_seconds", .double(replyDeadline)),
            JSONMember("zones", .array(zones.map { z in
                .object([JSONMember("name", .string(z.name)), JSONMember("assumes", .array(z.assumptions.map(JSONValue.string))),
                         JSONMember("main_cf", .array(z.mainCF.map(JSONValue.string)))])
            })),
            JSONMember("findings", .array(findings.map { f in
                .object([JSONMember("level", .string(f.level.rawValue)), JSONMember("zone", f.zone.map(JSONValue.string) ?? .null),
                         JSONMember("message", .string(f.message))])
            })),
        ])
    }

    public func text(style: TextStyle) -> String {
        var out: [String] = []
        for z in zones {
            out.append(style.bold("zone \(z.name)") + (z.name == "(default)" ? " (any socketmap name not listed under zones)" : ""))
            out += z.assumptions.map { "  assumes: \($0)" }
            out.append("  main.cf:")
            out += z.mainCF.map { "    \($0)" }
        }
        for f in findings {
            let label: String
            switch f.level {
            case .error: label = style.red("error")
            case .warning: label = style.yellow("warning")
            case .note: label = "note"
            }
            out.append("\(label)\(f.zone.map { " (zone \($0))" } ?? ""): \(f.message)")
        }
        return out.joined(separator: "\n")
    }
}

extension Double {
    var formatted: String { self == rounded() ? String(Int(self)) : String(format: "%.1f", self) }
}
