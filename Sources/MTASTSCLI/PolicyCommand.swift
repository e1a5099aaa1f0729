import ArgumentParser
import Foundation
import ServerSupport
import MTASTSCore

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Write and lint MTA-STS policy files.",
        subcommands: [PolicyLint.self, PolicyInit.self])
}

struct PolicyLint: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lint",
        abstract: "Check a policy file (mta-sts.txt) against RFC 8461 §3.2.",
        discussion: Help.reflow("""
            Reads FILE, or standard input when FILE is '-' or absent. Reports every error and
            warning with its line. A policy with errors is one senders reject (or, for a max_age
            above one year, cap). Exit 0 when valid (warnings allowed), 1 when not.
            """))

    @Argument(help: "The policy file, or '-' for standard input.")
    var file: String = "-"

    @OptionGroup var output: JSONFlag

    func run() throws {
        let bytes: [UInt8]
        do {
            bytes = try InputFiles.read(file, maxSize: 16 * 1024 * 1024)
        } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.problems)
        }
        let result = STSPolicy.parse(bytes)
        if output.json {
            var policyJSON = JSONValue.null
            if let p = result.policy {
                policyJSON = .object([
                    JSONMember("version", .string("STSv1")),
                    JSONMember("mode", .string(p.mode.rawValue)),
                    JSONMember("max_age", .int(Int64(p.maxAge))),
                    JSONMember("mx", .array(p.mx.map { .string($0.text) })),
                ])
            }
            let doc = JSONValue.object([
                JSONMember("valid", .bool(result.isValid)),
                JSONMember("policy", policyJSON),
                JSONMember("errors", result.diagnostics.errorsJSON),
                JSONMember("warnings", result.diagnostics.warningsJSON),
            ])
            Console.out(doc.serialized(pretty: true))
        } else {
            let name = file == "-" ? "<stdin>" : file
            if let p = result.policy, result.isValid {
                Console.out("\(name): \(Console.green("valid")) — mode \(p.mode.rawValue), max_age \(p.maxAge), mx \(p.mx.map(\.text).joined(separator: ", "))")
            } else if let p = result.policy {
                Console.out("\(name): \(Console.red("has errors")) — senders would apply mode \(p.mode.rawValue), max_age \(p.maxAge) (capped)")
            } else {
                Console.out("\(name): \(Console.red("invalid")) — senders ignore this policy (sts-policy-invalid)")
            }
            for d in result.diagnostics { Console.out(Console.line(for: d)) }
        }
        if !result.isValid { throw ExitCode(Exit.problems) }
    }
}

struct PolicyInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a policy and the DNS records to publish with it.",
        discussion: Help.reflow("""
            Prints the policy file, the _mta-sts and _smtp._tls TXT records (the id is derived from
            the policy's content, so it changes exactly when the policy does) and the policy host to
            set up, with the roll-out steps. Start in testing mode, read the TLS reports, then switch
            to enforce.
            """))

    @Option(help: "The mail domain (the part after @ in addresses).")
    var domain: String

    @Option(parsing: .upToNextOption, help: "MX host names or patterns (*.example.com), one or more.")
    var mx: [String] = []

    @Option(help: "testing, enforce or none.")
    var mode: String = "testing"

    @Option(name: .customLong("max-age"), help: "Seconds senders may cache the policy (at most 31557600).")
    var maxAge: Int = 604_800

    @Option(parsing: .upToNextOption, help: "TLS report destinations (mailto: or https:); default mailto:tlsrpt@DOMAIN.")
    var rua: [String] = []

    @Option(name: .customLong("write-policy"), help: "Also write the policy file (CRLF line ends) to this path.")
    var writePolicy: String?

    @OptionGroup var output: JSONFlag

    struct Plan {
        var domain: DomainName
        var policy: STSPolicy
        var tlsrpt: TLSRPTRecord
        var defaultRUA: Bool
    }

    func validate() throws {
        _ = try plan()
    }

    func plan() throws -> Plan {
        let d: DomainName
        do { d = try DomainName(addressOrDomain: domain) } catch { throw ValidationError("--domain: \(error)") }
        guard let m = STSMode(rawValue: mode) else { throw ValidationError("--mode must be testing, enforce or none, not '\(mode)'") }
        guard maxAge >= 0 && maxAge <= STSPolicy.maxAgeLimit else {
            throw ValidationError("--max-age must be between 0 and \(STSPolicy.maxAgeLimit) seconds")
        }
        var patterns: [MXPattern] = []
        for value in mx {
            let wildcard = value.hasPrefix("*.")
            do {
                let host = try DomainName(wildcard ? String(value.dropFirst(2)) : value)
                let p = try MXPattern(strict: (wildcard ? "*." : "") + host.text)
                if !patterns.contains(p) { patterns.append(p) }
            } catch {
                throw ValidationError("--mx: \(error)")
            }
        }
        if m != .none && patterns.isEmpty { throw ValidationError("mode \(m.rawValue) needs at least one --mx") }
        var uris: [ReportURI] = []
        for value in rua.isEmpty ? ["mailto:tlsrpt@\(d.text)"] : rua {
            let (uri, diagnostic) = ReportURI.parse(value)
            guard let uri else { throw ValidationError("--rua: \(diagnostic?.message ?? value)") }
            uris.append(uri)
        }
        return Plan(domain: d, policy: STSPolicy(mode: m, maxAge: maxAge, mx: patterns), tlsrpt: TLSRPTRecord(rua: uris), defaultRUA: rua.isEmpty)
    }

    func run() throws {
        let plan = try plan()
        let policy = plan.policy
        let sts = STSRecord(id: policy.contentID)
        let d = plan.domain
        if let writePolicy {
            do {
                try Data(policy.render().utf8).write(to: URL(fileURLWithPath: writePolicy))
            } catch {
                Console.err("cannot write \(writePolicy): \(error.localizedDescription)")
                throw ExitCode(Exit.problems)
            }
        }
        if output.json {
            let doc = JSONValue.object([
                JSONMember("domain", .string(d.text)),
                JSONMember("policy", .string(policy.render())),
                JSONMember("policy_url", .string(d.policyURL)),
                JSONMember("policy_host", .string(d.policyHost)),
                JSONMember("records", .array([
                    .object([JSONMember("name", .string(d.stsRecordName)), JSONMember("type", .string("TXT")), JSONMember("value", .string(sts.text))]),
                    .object([JSONMember("name", .string(d.tlsrptRecordName)), JSONMember("type", .string("TXT")), JSONMember("value", .string(plan.tlsrpt.text))]),
                ])),
            ])
            Console.out(doc.serialized(pretty: true))
            return
        }
        var lines: [String] = []
        lines.append(Console.bold("# 1. The policy file") + " — serve it at \(d.policyURL)")
        lines.append("#    over HTTPS with a certificate valid for \(d.policyHost), status 200, Content-Type: text/plain,")
        lines.append("#    no redirects." + (writePolicy.map { " Written to \($0)." } ?? " (--write-policy FILE writes it with CRLF line ends.)"))
        lines.append("")
        lines += policy.lines
        lines.append("")
        lines.append(Console.bold("# 2. DNS records") + " (zone-file syntax; publish the policy file first, then the _mta-sts record)")
        let width = max(d.stsRecordName.count, d.tlsrptRecordName.count, d.policyHost.count) + 1
        func pad(_ s: String) -> String { s + String(repeating: " ", count: max(1, width + 1 - s.count)) }
        lines.append(pad(d.stsRecordName + ".") + "3600 IN TXT \"\(sts.text)\"")
        lines.append(pad(d.tlsrptRecordName + ".") + "3600 IN TXT \"\(plan.tlsrpt.text)\"")
        lines.append(pad(d.policyHost + ".") + "3600 IN CNAME <the web server that serves the policy>  ; or A/AAAA")
        if plan.defaultRUA {
            lines.append("; reports go to mailto:tlsrpt@\(d.text) — make sure that mailbox exists, or pass --rua")
        }
        lines.append("")
        lines.append(Console.bold("# 3. Roll-out"))
        switch policy.mode {
        case .testing:
            lines.append("#  - Senders now report (TLS-RPT) but still deliver when the checks fail.")
            lines.append("#  - Read the daily reports for a week or two; fix every MX that fails.")
            lines.append("#  - Then run: mtasts policy init --domain \(d.text) --mode enforce --mx \(policy.mx.map { $0.isWildcard ? "'\($0.text)'" : $0.text }.joined(separator: " "))")
            lines.append("#    publish the new file first, then the new _mta-sts record (its id changes with the policy).")
        case .enforce:
            lines.append("#  - Senders that honour MTA-STS will refuse to deliver to an MX that fails TLS or is not listed.")
            lines.append("#  - Whenever you change MX hosts: update the policy file first, then the _mta-sts id.")
        case .none:
            lines.append("#  - mode none withdraws the policy: keep it published for at least the old max_age, then remove the records.")
        }
        Console.out(lines.joined(separator: "\n"))
    }
}
