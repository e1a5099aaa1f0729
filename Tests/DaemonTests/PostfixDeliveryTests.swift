import Foundation
import Testing
import TestSupport

/// A real Postfix (Debian's) in its own configuration directory, its TLS policy from `mtasts
/// daemon`, delivering to MX hosts on loopback (our SMTP test servers) whose names, policies and
/// TLSA records a test declares. Postfix reads only the system resolver, so it runs in a private
/// mount namespace whose /etc/resolv.conf names the test's DNS server (port 53 on its own
/// loopback address).
final class PostfixLab: @unchecked Sendable {
    let ca: TestCA
    let dir: URL
    let caFile: String
    let smtpPort = TestServer.freePort()
    let policyPort = TestServer.freePort()
    let mail = MailLog()
    let net: String
    var servers: [TestServer] = []
    /// The zone as dnsmasq lines and as FakeDNS records (a test serves one or the other).
    var zone: [String] = []
    var records: [FakeDNS.Record] = []
    private var n = 10
    var daemon: Spawned?
    var postfix: Spawned?
    var etc: URL { dir.appendingPathComponent("etc") }
    var maillog: String { dir.appendingPathComponent("maillog").path }
    var daemonConfig: String { dir.appendingPathComponent("mtasts.yml").path }

    /// `net`: the first three parts of this lab's loopback addresses ("127.0.4").
    init(net: String) throws {
        self.net = net
        ca = try TestCA()
        dir = URL(fileURLWithPath: "/tmp/mtasts-pf-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        caFile = try ca.writePEM(to: dir)
    }

    func next() -> String { n += 1; return "\(net).\(n)" }

    /// A domain: its policy (mode, mx patterns) and its MX as DNS says, with how that MX behaves.
    func domain(_ d: String, mode: String, policyMX: String, mxName: String, behaviour: SMTPBehaviour, leaf: TestCA.Leaf) throws {
        let policyAddress = next()
        zone.append("txt-record=_mta-sts.\(d),\"v=STSv1; id=\(mode)1;\"")
        zone.append("txt-record=_smtp._tls.\(d),\"v=TLSRPTv1; rua=mailto:tlsrpt@\(d)\"")
        zone.append("host-record=mta-sts.\(d),\(policyAddress)")
        records += [.txt("_mta-sts.\(d)", "v=STSv1; id=\(mode)1;"), .a("mta-sts.\(d)", policyAddress)]
        let body = "version: STSv1\nmode: \(mode)\n" + policyMX.split(separator: " ").map { "mx: \($0)\n" }.joined() + "max_age: 86400\n"
        servers.append(try TestServer.policyHost(address: policyAddress, port: policyPort, leaf: ca.issue(dnsNames: ["mta-sts.\(d)"]),
                                                 behaviour: .respond(status: 200, contentType: "text/plain", body: body)))
        try mx(d, mxName, behaviour: behaviour, leaf: leaf)
    }

    /// An MX host of `d` (preference 10) and the test server behind it.
    func mx(_ d: String, _ mxName: String, behaviour: SMTPBehaviour, leaf: TestCA.Leaf) throws {
        let mxAddress = next()
        zone.append("mx-host=\(d),\(mxName),10")
        zone.append("host-record=\(mxName),\(mxAddress)")
        records += [.mx(d, 10, mxName), .a(mxName, mxAddress)]
        servers.append(try TestServer.mx(address: mxAddress, port: smtpPort, hostname: mxName, leaf: leaf, behaviour: behaviour, mail: mail))
    }

    /// `mtasts daemon` with the SQLite cache, reporting on, this lab's CA and policy port.
    func startDaemon(dns: String, extra: String = "") throws -> Int {
        let port = TestServer.freePort()
        try """
            host: 127.0.0.1
            port: \(port)
            cache:
              type: sqlite
              options:
                filename: \(dir.path)/policy-cache.db
            tlsrpt_database: \(dir.path)/tlsrpt.db
            reporting:
              organization: Test Sender
              submitter: localdomain
            dns_server: \(dns)
            dns_timeout: 2
            ca_file: \(caFile)
            system_roots: false
            policy_port: \(policyPort)
            \(extra)
            """.write(toFile: daemonConfig, atomically: true, encoding: .utf8)
        daemon = try Spawned(CLI.binary.path, ["daemon", "--config", daemonConfig], stderrPath: dir.appendingPathComponent("mtasts.log").path)
        return port
    }

    var daemonLog: String { (try? String(contentsOfFile: dir.appendingPathComponent("mtasts.log").path, encoding: .utf8)) ?? "" }

    /// Postfix with `smtp_tls_policy_maps` on the daemon's socketmap `zone`, resolving through
    /// `nameserver` (port 53); `extra` lines end main.cf (later lines win).
    func startPostfix(daemonPort: Int, zone: String = "postfix", nameserver: String, resolvOptions: String = "", extra: String = "") throws {
        try FileManager.default.createDirectory(at: etc, withIntermediateDirectories: true)
        try """
            compatibility_level = 3.6
            queue_directory = \(dir.path)/spool
            data_directory = \(dir.path)/data
            mail_owner = postfix
            setgid_group = postdrop
            myhostname = sender.localdomain
            mydomain = localdomain
            myorigin = localdomain
            mydestination =
            inet_interfaces = loopback-only
            inet_protocols = ipv4
            maillog_file = /dev/stdout
            smtp_tcp_port = \(smtpPort)
            smtp_host_lookup = dns
            smtp_tls_security_level = may
            smtp_tls_CAfile = \(caFile)
            smtp_tls_loglevel = 1
            smtp_tls_policy_maps = socketmap:inet:127.0.0.1:\(daemonPort):\(zone)
            smtp_connect_timeout = 5s
            smtp_helo_timeout = 10s
            queue_run_delay = 300s
            minimal_backoff_time = 300s
            \(extra)
            """.write(to: etc.appendingPathComponent("main.cf"), atomically: true, encoding: .utf8)
        // Debian's master.cf without chroot, without the SMTP server and the pipe transports.
        let dist = try String(contentsOfFile: "/usr/share/postfix/master.cf.dist", encoding: .utf8)
        var master: [String] = []
        for line in dist.split(separator: "\n", omittingEmptySubsequences: false) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 8, !line.hasPrefix("#"), !line.hasPrefix(" ") else { continue }
            if fields[1] == "inet" || fields.last == "pipe" { continue }
            var f = fields.map(String.init)
            f[4] = "n"
            master.append(f.joined(separator: " "))
        }
        try (master.joined(separator: "\n") + "\n").write(to: etc.appendingPathComponent("master.cf"), atomically: true, encoding: .utf8)
        let resolv = dir.appendingPathComponent("resolv.conf")
        try "nameserver \(nameserver)\noptions attempts:1 timeout:2 \(resolvOptions)\n".write(to: resolv, atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "\(dir.path)/spool", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(dir.path)/data", withIntermediateDirectories: true)
        _ = try CLI.program("/bin/chown", ["postfix", "\(dir.path)/data"])
        let check = try CLI.program("/usr/sbin/postfix", ["-c", etc.path, "check"])
        #expect(check.status == 0, "postfix check: \(check.stdout)")
        postfix = try Spawned("/usr/bin/unshare", ["-m", "/bin/sh", "-c",
                                                   "mount --bind \(resolv.path) /etc/resolv.conf && exec /usr/sbin/postfix -c \(etc.path) start-fg"],
                              stderrPath: dir.appendingPathComponent("postfix.err").path, stdoutPath: maillog)
        let started = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: "\(dir.path)/spool/pid/master.pid") && Date() < started { Thread.sleep(forTimeInterval: 0.1) }
        #expect(postfix?.hasExited == false, "\((try? String(contentsOfFile: dir.appendingPathComponent("postfix.err").path, encoding: .utf8)) ?? "")")
    }

    /// One message to postmaster@ each domain.
    func send(_ domains: [String]) throws {
        for d in domains {
            let message = "From: sender@localdomain\nTo: postmaster@\(d)\nSubject: to \(d)\n\nhello \(d)\n"
            let out = try CLI.program("/usr/sbin/sendmail", ["-C", etc.path, "-f", "sender@localdomain", "postmaster@\(d)"], stdin: Data(message.utf8))
            #expect(out.status == 0, "\(out.stderr)")
        }
    }

    /// Deferred recipients and why.
    func deferredReasons() throws -> [String: String] {
        let out = try CLI.program("/usr/sbin/postqueue", ["-c", etc.path, "-j"])
        var reasons: [String: String] = [:]
        for line in out.stdout.split(separator: "\n") {
            guard let m = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], m["queue_name"] as? String == "deferred" else { continue }
            for r in (m["recipients"] as? [[String: Any]]) ?? [] {
                if let address = r["address"] as? String { reasons[address] = r["delay_reason"] as? String ?? "" }
            }
        }
        return reasons
    }

    /// Waits until `count` messages were delivered or deferred once; the deferred reasons and the log.
    func settle(_ count: Int) throws -> (reasons: [String: String], log: String) {
        let end = Date().addingTimeInterval(90)
        while (mail.messages.count + (try deferredReasons().count)) < count && Date() < end { Thread.sleep(forTimeInterval: 0.25) }
        return (try deferredReasons(), (try? String(contentsOfFile: maillog, encoding: .utf8)) ?? "")
    }

    var receivedBy: [String: [(host: String, tls: Bool, data: String, user: String?)]] { Dictionary(grouping: mail.messages, by: \.host) }

    deinit {
        if postfix != nil { _ = try? CLI.program("/usr/sbin/postfix", ["-c", etc.path, "stop"]) }
        postfix?.stop()
        daemon?.stop()
        if ProcessInfo.processInfo.environment["KEEP"] == nil { try? FileManager.default.removeItem(at: dir) }
    }
}

/// End to end through Postfix. In enforce mode a stripped STARTTLS, a forged certificate and a
/// spoofed MX are deferred and the mail stays queued, never sent in clear; the good MX gets it over
/// verified TLS; in testing mode the same attacks do not stop delivery. With the daemon's defaults
/// and Postfix's (no DNSSEC), mail is never deferred where Postfix alone would deliver it.
@Suite(.serialized) struct PostfixDeliveryTests {
    @Test func enforceDefersAttacksTestingDelivers() throws {
        let lab = try PostfixLab(net: "127.0.4")
        let ca = lab.ca
        let forger = try TestCA(commonName: "Forger CA")
        for mode in ["enforce", "testing"] {
            try lab.domain("good-\(mode).test", mode: mode, policyMX: "mx.good-\(mode).test", mxName: "mx.good-\(mode).test",
                           behaviour: .starttls, leaf: ca.issue(dnsNames: ["mx.good-\(mode).test"]))
            // A downgrade: the MX (or a man in the middle) does not offer STARTTLS.
            try lab.domain("strip-\(mode).test", mode: mode, policyMX: "mx.strip-\(mode).test", mxName: "mx.strip-\(mode).test",
                           behaviour: .noSTARTTLS, leaf: ca.issue(dnsNames: ["mx.strip-\(mode).test"]))
            // A man in the middle with a certificate of its own CA.
            try lab.domain("forged-\(mode).test", mode: mode, policyMX: "mx.forged-\(mode).test", mxName: "mx.forged-\(mode).test",
                           behaviour: .starttls, leaf: forger.issue(dnsNames: ["mx.forged-\(mode).test"]))
            // A spoofed MX record: a host outside the policy, with a valid certificate for its own name.
            try lab.domain("spoofed-\(mode).test", mode: mode, policyMX: "mx.spoofed-\(mode).test", mxName: "evil.attacker-\(mode).test",
                           behaviour: .starttls, leaf: ca.issue(dnsNames: ["evil.attacker-\(mode).test"]))
        }
        // Issue 13: the daemon's defaults never defer what Postfix alone would deliver, and never
        // accept what the policy does not. DANE-EE and PKIX-EE TLSA records (no DNSSEC here): the
        // policy applies, nothing waits with 4.7.5.
        let safety = ["dane.test", "pkix.test", "wild1.test", "wild2.test", "servfail.test"]
        let daneLeaf = try ca.issue(dnsNames: ["mx.dane.test"])
        try lab.domain("dane.test", mode: "enforce", policyMX: "mx.dane.test", mxName: "mx.dane.test", behaviour: .starttls, leaf: daneLeaf)
        lab.zone.append("dns-rr=_25._tcp.mx.dane.test,52,030001\(daneLeaf.sha256.map { String(format: "%02X", $0) }.joined())")
        try lab.domain("pkix.test", mode: "enforce", policyMX: "mx.pkix.test", mxName: "mx.pkix.test", behaviour: .starttls, leaf: ca.issue(dnsNames: ["mx.pkix.test"]))
        lab.zone.append("dns-rr=_25._tcp.mx.pkix.test,52,010101AABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233445566778899")
        // A wildcard covers one label (RFC 8461 §4.1): mx1.wild1.test is delivered; a.b.wild2.test,
        // with a valid certificate for its own name, is deferred.
        try lab.domain("wild1.test", mode: "enforce", policyMX: "*.wild1.test", mxName: "mx1.wild1.test", behaviour: .starttls, leaf: ca.issue(dnsNames: ["mx1.wild1.test"]))
        try lab.domain("wild2.test", mode: "enforce", policyMX: "*.wild2.test", mxName: "a.b.wild2.test", behaviour: .starttls, leaf: ca.issue(dnsNames: ["a.b.wild2.test"]))
        // SERVFAIL on _mta-sts with nothing cached: no policy, delivered at Postfix's own level.
        try lab.mx("servfail.test", "mx.servfail.test", behaviour: .noSTARTTLS, leaf: ca.issue(dnsNames: ["mx.servfail.test"]))
        let dns = try DNSMasq(lines: lab.zone, failing: ["_mta-sts.servfail.test"], address: "127.0.4.53", fixedPort: 53)
        let daemonPort = try lab.startDaemon(dns: dns.server)
        try lab.startPostfix(daemonPort: daemonPort, nameserver: "127.0.4.53")
        let config = lab.daemonConfig
        let maillog = lab.maillog
        let domains = ["enforce", "testing"].flatMap { m in ["good", "strip", "forged", "spoofed"].map { "\($0)-\(m).test" } }
        try lab.send(domains + safety)
        let (reasons, log) = try lab.settle(domains.count + safety.count)
        let receivedBy = lab.receivedBy
        // enforce: the attacks are deferred, the mail still queued, and those MX got nothing.
        let strip = reasons["postmaster@strip-enforce.test"] ?? ""
        #expect(strip.contains("TLS is required, but was not offered"), "\(reasons)\n\(log)")
        #expect((reasons["postmaster@forged-enforce.test"] ?? "").contains("Server certificate not verified"), "\(reasons)")
        #expect((reasons["postmaster@spoofed-enforce.test"] ?? "").contains("Server certificate not verified"), "\(reasons)")
        #expect(reasons.count == 4, "\(reasons)")
        for attacked in ["mx.strip-enforce.test", "mx.forged-enforce.test", "evil.attacker-enforce.test"] {
            #expect(receivedBy[attacked] == nil, "\(attacked) received mail")
        }
        // The good MX: over TLS, verified by Postfix against the policy.
        #expect(receivedBy["mx.good-enforce.test"]?.first?.tls == true)
        #expect(log.contains("Verified TLS connection established to mx.good-enforce.test"), "\(log)")
        // testing: every message delivered (the attacks are only reported), the stripped one in clear.
        #expect(receivedBy["mx.good-testing.test"]?.first?.tls == true)
        #expect(receivedBy["mx.strip-testing.test"]?.first?.tls == false)
        #expect(receivedBy["mx.forged-testing.test"]?.first?.tls == true)
        #expect(receivedBy["evil.attacker-testing.test"]?.first?.tls == true)
        #expect(receivedBy["mx.good-testing.test"]?.first?.data.contains("hello good-testing.test") == true)

        // Issue 13: TLSA records without DNSSEC change nothing; a wildcard covers one label; SERVFAIL delivers.
        for host in ["mx.dane.test", "mx.pkix.test", "mx1.wild1.test"] {
            #expect(receivedBy[host]?.first?.tls == true, "\(host)\n\(reasons)\n\(log)")
            #expect(log.contains("Verified TLS connection established to \(host)"), "\(host)")
        }
        #expect(!log.contains("TLS configuration problem") && reasons["postmaster@dane.test"] == nil && reasons["postmaster@pkix.test"] == nil, "\(reasons)")
        #expect((reasons["postmaster@wild2.test"] ?? "").contains("Server certificate not verified"), "\(reasons)")
        #expect(receivedBy["a.b.wild2.test"] == nil)
        #expect(receivedBy["mx.servfail.test"]?.first?.tls == false, "\(reasons)\n\(lab.daemonLog)")

        // Postfix 3.7 has no TLSRPT: `mtasts collect-log` reads the same outcomes from its log, with
        // the policies the daemon cached and the _smtp._tls records from DNS.
        let collected = try CLI.run(["collect-log", maillog, "--config", config, "--json"])
        #expect(collected.status == 0, "\(collected.stderr)")
        // 8 + dane, pkix, wild1, wild2 (servfail has no TLSRPT record).
        #expect((collected.json as? [String: Any])?["stored"] as? Int == 12, "\(collected.stdout)\n\(log)")
        let out = lab.dir.appendingPathComponent("reports")
        let day = String(ISO8601DateFormatter().string(from: Date()).prefix(10))
        let built = try CLI.run(["reports", "build", "--day", day, "--out", out.path, "--config", config, "--json"])
        #expect(built.status == 0, "\(built.stderr)")
        var outcome: [String: (ok: Int, failed: Int, types: [String])] = [:]
        for file in try FileManager.default.contentsOfDirectory(at: out, includingPropertiesForKeys: nil) where file.pathExtension == "json" {
            let report = try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as! [String: Any]
            for p in report["policies"] as! [[String: Any]] {
                let policy = p["policy"] as! [String: Any]
                #expect(policy["policy-type"] as? String == "sts")
                let summary = p["summary"] as! [String: Int]
                let types = (p["failure-details"] as? [[String: Any]] ?? []).compactMap { $0["result-type"] as? String }
                outcome[policy["policy-domain"] as! String] = (summary["total-successful-session-count"]!, summary["total-failure-session-count"]!, types)
            }
        }
        let expected: [String: (Int, Int, [String])] = [
            "good-enforce.test": (1, 0, []), "strip-enforce.test": (0, 1, ["starttls-not-supported"]),
            "forged-enforce.test": (0, 1, ["certificate-not-trusted"]), "spoofed-enforce.test": (0, 1, ["certificate-host-mismatch"]),
            "good-testing.test": (1, 0, []), "strip-testing.test": (0, 1, ["starttls-not-supported"]),
            "forged-testing.test": (0, 1, ["certificate-not-trusted"]), "spoofed-testing.test": (0, 1, ["validation-failure"]),
        ]
        for (domain, e) in expected {
            let got = outcome[domain]
            #expect(got?.ok == e.0 && got?.failed == e.1 && got?.types == e.2, "\(domain): \(String(describing: got))\n\(log)")
        }
        _ = dns
    }

    /// A zone declared DNSSEC-capable, Postfix at `smtp_dns_support_level = dnssec` and level
    /// `dane`, resolving through the AD-bit responder (`options trust-ad`): DANE comes first
    /// (RFC 8461 §2) exactly where Postfix authenticates every MX by DANE (CONFORMANCE 8461 #29;
    /// vector 28: DANE fails, MTA-STS would pass → not delivered).
    @Test func dnssecZoneDANEFirst() throws {
        let lab = try PostfixLab(net: "127.0.5")
        let ca = lab.ca
        let selfSigned = try TestCA(commonName: "mx.dane-ok.test")
        // A certificate no CA vouches for, matching its DANE-EE record: delivered by DANE.
        let daneLeaf = try selfSigned.issue(dnsNames: ["mx.dane-ok.test"])
        try lab.domain("dane-ok.test", mode: "enforce", policyMX: "mx.dane-ok.test", mxName: "mx.dane-ok.test", behaviour: .starttls, leaf: daneLeaf)
        lab.records.append(.tlsa("_25._tcp.mx.dane-ok.test", usage: 3, selector: 0, matching: 1, data: daneLeaf.sha256))
        // A TLSA record that does not match: deferred although MTA-STS would pass.
        try lab.domain("dane-bad.test", mode: "enforce", policyMX: "mx.dane-bad.test", mxName: "mx.dane-bad.test", behaviour: .starttls, leaf: ca.issue(dnsNames: ["mx.dane-bad.test"]))
        lab.records.append(.tlsa("_25._tcp.mx.dane-bad.test", usage: 3, selector: 0, matching: 1, data: Array(repeating: 0x5A, count: 32)))
        // PKIX-EE only: not usable for SMTP, MTA-STS applies.
        try lab.domain("pkix-only.test", mode: "enforce", policyMX: "mx.pkix-only.test", mxName: "mx.pkix-only.test", behaviour: .starttls, leaf: ca.issue(dnsNames: ["mx.pkix-only.test"]))
        lab.records.append(.tlsa("_25._tcp.mx.pkix-only.test", usage: 1, selector: 0, matching: 1, data: Array(repeating: 0x11, count: 32)))
        // TLSA SERVFAIL: deferred, never MTA-STS in its place.
        try lab.domain("tlsa-fail.test", mode: "enforce", policyMX: "mx.tlsa-fail.test", mxName: "mx.tlsa-fail.test", behaviour: .starttls, leaf: ca.issue(dnsNames: ["mx.tlsa-fail.test"]))
        // Postfix asks for the TLSA records of the port it connects to (the test MX port), the
        // daemon for port 25: both names carry them.
        lab.records += lab.records.filter { $0.type == 52 }.map { FakeDNS.Record(name: $0.name.replacingOccurrences(of: "_25._tcp.", with: "_\(lab.smtpPort)._tcp."), type: 52, rdata: $0.rdata) }
        let dns = try FakeDNS(records: lab.records, address: "127.0.5.53", port: 53)
        dns.update { $0.servfail = ["_25._tcp.mx.tlsa-fail.test", "_\(lab.smtpPort)._tcp.mx.tlsa-fail.test"] }
        let daemonPort = try lab.startDaemon(dns: dns.server, extra: "zones:\n  dnssec:\n    dnssec: true\n")
        try lab.startPostfix(daemonPort: daemonPort, zone: "dnssec", nameserver: "127.0.5.53", resolvOptions: "trust-ad",
                             extra: "smtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\n")
        // --check-config against this Postfix: consistent; the same zone against a Postfix without DNSSEC is not.
        let consistent = try CLI.run(["daemon", "--check-config", lab.daemonConfig, "--postfix-config", lab.etc.path])
        #expect(consistent.status == 0, "\(consistent.stdout)")
        let domains = ["dane-ok.test", "dane-bad.test", "pkix-only.test", "tlsa-fail.test"]
        try lab.send(domains)
        let (reasons, log) = try lab.settle(domains.count)
        let receivedBy = lab.receivedBy
        #expect(receivedBy["mx.dane-ok.test"]?.first?.tls == true, "\(reasons)\n\(dns.asked)")
        #expect(log.contains("Verified TLS connection established to mx.dane-ok.test"), "\(log)")
        #expect(receivedBy["mx.dane-bad.test"] == nil && reasons["postmaster@dane-bad.test"] != nil, "\(reasons)")
        #expect(receivedBy["mx.pkix-only.test"]?.first?.tls == true, "\(reasons)\n\(log)")
        #expect(receivedBy["mx.tlsa-fail.test"] == nil && reasons["postmaster@tlsa-fail.test"] != nil, "\(reasons)")
        // What the daemon answered, by query: dane-only, dane-only, MTA-STS, TEMP.
        let answers = try domains.map { d in try CLI.program("/usr/sbin/postmap", ["-c", lab.etc.path, "-q", d, "socketmap:inet:127.0.0.1:\(daemonPort):dnssec"]) }
        #expect(answers[0].stdout.hasPrefix("dane-only") && answers[1].stdout.hasPrefix("dane-only"), "\(answers.map(\.stdout))")
        #expect(answers[2].stdout.hasPrefix("secure match=mx.pkix-only.test"))
        #expect(answers[3].stderr.contains("temporary error"), "\(answers[3].stderr)")
        try "smtp_tls_policy_maps = socketmap:inet:127.0.0.1:\(daemonPort):dnssec\n".write(to: lab.etc.appendingPathComponent("main.cf"), atomically: true, encoding: .utf8)
        let contradicted = try CLI.run(["daemon", "--check-config", lab.daemonConfig, "--postfix-config", lab.etc.path])
        #expect(contradicted.status == 1 && contradicted.stdout.contains("dane-only replies would defer mail"), "\(contradicted.stdout)")
        _ = dns
    }
}
