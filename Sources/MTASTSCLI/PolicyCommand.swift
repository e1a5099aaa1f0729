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
        Console.out(output.json ? result.json.serialized(pretty: true) : result.text(name: file == "-" ? "<stdin>" : file, style: Console.style))
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

    func validate() throws {
        _ = try plan()
    }

    func plan() throws -> PolicySetup {
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
        return PolicySetup(domain: d, policy: STSPolicy(mode: m, maxAge: maxAge, mx: patterns), tlsrpt: TLSRPTRecord(rua: uris), defaultRUA: rua.isEmpty)
    }

    func run() throws {
        let plan = try plan()
        let policy = plan.policy
        if let writePolicy {
            do {
                try Data(policy.render().utf8).write(to: URL(fileURLWithPath: writePolicy))
            } catch {
                Console.err("cannot write \(writePolicy): \(error.localizedDescription)")
                throw ExitCode(Exit.problems)
            }
        }
        Console.out(output.json ? plan.json.serialized(pretty: true) : plan.text(style: Console.style, writtenTo: writePolicy))
    }
}
