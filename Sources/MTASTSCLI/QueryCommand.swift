import ArgumentParser
import Foundation
import Logging
import MTASTSConfig
import MTASTSCore
import PolicyDaemon
import PolicyResolver
import Socketmap

struct QueryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "query",
        abstract: "The MTA-STS policy a sender applies to a domain now, and the daemon's reply.",
        discussion: Help.reflow("""
            Resolves like `mtasts daemon` (same configuration, same cache): from the cache while it
            is valid, else from DNS and the policy host, saving what it fetched. Shows where the
            answer came from, the policy, its expiry and the exact socketmap reply.

            Exit codes: 0 a policy applies, 1 no policy, 2 usage, 3 temporary failure (DNS, the
            cache): try again later.
            """))

    @Argument(help: "The destination domain (as Postfix passes it: a domain, [domain], domain:port).")
    var domain: String

    @Option(name: [.short, .long], help: "The daemon's YAML configuration (its cache, DNS server, trust anchors, zones).")
    var config: String?

    @Option(help: "The socketmap name (zone) whose settings shape the reply.")
    var zone: String = "postfix"

    @Flag(name: .customLong("no-cache"), help: "Neither read nor write the persistent cache.")
    var noCache = false

    @Option(name: .customLong("dns-server"), help: "Ask this DNS server (IPv4[:PORT]); overrides the configuration.")
    var dnsServer: String?

    @Option(name: .customLong("ca-file"), help: "Extra trust anchors (PEM), beside those of the configuration.")
    var caFile: [String] = []

    @Option(name: .customLong("policy-port"), help: "Port of the policy hosts (443; for tests and labs).")
    var policyPort: Int?

    @OptionGroup var output: JSONFlag

    func run() async throws {
        var cfg: DaemonConfig
        do { cfg = try config.map { path throws(DaemonConfig.ConfigError) in try DaemonConfig.load(path: path) } ?? DaemonConfig() } catch {
            throw ValidationError("\(error)")
        }
        if let dnsServer { cfg.dnsServer = dnsServer }
        cfg.caFiles += caFile
        if let policyPort { cfg.policyPort = policyPort }
        guard let name = SocketmapKey.policyDomain(domain) else {
            // An address literal or a `.domain` pattern: no policy domain (RFC 8461 §3.4).
            emit(domain: domain, resolution: nil, reply: SocketmapReply.notFound, note: "not a policy domain (an address literal or a domain pattern)")
            throw ExitCode(Exit.problems)
        }
        let resolver: PolicyResolver
        do {
            let store = noCache ? nil : try DaemonRuntime.makeStore(cfg)
            resolver = try DaemonRuntime.makeResolver(cfg, store: store, logger: Logger(label: "resolver", factory: { _ in SwiftLogNoOpLogHandler() }))
        } catch {
            Console.err("mtasts query: \(error)")
            throw ExitCode(Exit.temporary)
        }
        let resolution = await resolver.resolve(name)
        await resolver.drainWrites()  // what was fetched reaches the cache before the process exits
        let reply = PolicyMapResponder.render(resolution, zone: zone, in: cfg)
        emit(domain: name.text, resolution: resolution, reply: reply, note: nil)
        switch resolution.status {
        case .policy: return
        case .noPolicy: throw ExitCode(Exit.problems)
        case .temporary: throw ExitCode(Exit.temporary)
        }
    }

    func emit(domain: String, resolution: Resolution?, reply: String, note: String?) {
        let answer = PolicyAnswer(domain: domain, resolution: resolution, reply: reply, note: note)
        Console.out(output.json ? String(decoding: answer.json.serializedBytes(pretty: true), as: UTF8.self) : answer.text(style: Console.style))
    }
}
