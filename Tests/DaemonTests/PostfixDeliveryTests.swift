import Foundation
import Testing
import TestSupport

/// End to end: a real Postfix (Debian's) in its own configuration directory, its TLS policy from
/// `mtasts daemon`, delivering to MX hosts on loopback. In enforce mode a stripped STARTTLS, a
/// forged certificate and a spoofed MX are deferred and the mail stays queued, never sent in
/// clear; the good MX gets it over verified TLS; in testing mode the same attacks do not stop
/// delivery. Postfix resolves through dnsmasq on 127.0.4.53:53: it reads only the system
/// resolver, so it runs in a private mount namespace whose /etc/resolv.conf names that server.
@Suite(.serialized) struct PostfixDeliveryTests {
    @Test func enforceDefersAttacksTestingDelivers() throws {
        let ca = try TestCA()
        let forger = try TestCA(commonName: "Forger CA")
        let dir = URL(fileURLWithPath: "/tmp/mtasts-pf-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { if ProcessInfo.processInfo.environment["KEEP"] == nil { try? FileManager.default.removeItem(at: dir) } }
        let caFile = try ca.writePEM(to: dir)
        let smtpPort = TestServer.freePort()
        let policyPort = TestServer.freePort()
        let mail = MailLog()
        var servers: [TestServer] = []
        var zone: [String] = []
        var n = 10
        func next() -> String { n += 1; return "127.0.4.\(n)" }

        /// A domain: its policy (mode, mx patterns) and its MX as DNS says, with how that MX behaves.
        func domain(_ d: String, mode: String, policyMX: String, mxName: String, behaviour: SMTPBehaviour, leaf: TestCA.Leaf) throws {
            let policyAddress = next()
            zone.append("txt-record=_mta-sts.\(d),\"v=STSv1; id=\(mode)1;\"")
            zone.append("txt-record=_smtp._tls.\(d),\"v=TLSRPTv1; rua=mailto:tlsrpt@\(d)\"")
            zone.append("host-record=mta-sts.\(d),\(policyAddress)")
            servers.append(try TestServer.policyHost(address: policyAddress, port: policyPort, leaf: ca.issue(dnsNames: ["mta-sts.\(d)"]),
                                                     behaviour: .respond(status: 200, contentType: "text/plain",
                                                                         body: "version: STSv1\nmode: \(mode)\nmx: \(policyMX)\nmax_age: 86400\n")))
            let mxAddress = next()
            zone.append("mx-host=\(d),\(mxName),10")
            zone.append("host-record=\(mxName),\(mxAddress)")
            servers.append(try TestServer.mx(address: mxAddress, port: smtpPort, hostname: mxName, leaf: leaf, behaviour: behaviour, mail: mail))
        }
        for mode in ["enforce", "testing"] {
            try domain("good-\(mode).test", mode: mode, policyMX: "mx.good-\(mode).test", mxName: "mx.good-\(mode).test",
                       behaviour: .starttls, leaf: ca.issue(dnsNames: ["mx.good-\(mode).test"]))
            // A downgrade: the MX (or a man in the middle) does not offer STARTTLS.
            try domain("strip-\(mode).test", mode: mode, policyMX: "mx.strip-\(mode).test", mxName: "mx.strip-\(mode).test",
                       behaviour: .noSTARTTLS, leaf: ca.issue(dnsNames: ["mx.strip-\(mode).test"]))
            // A man in the middle with a certificate of its own CA.
            try domain("forged-\(mode).test", mode: mode, policyMX: "mx.forged-\(mode).test", mxName: "mx.forged-\(mode).test",
                       behaviour: .starttls, leaf: forger.issue(dnsNames: ["mx.forged-\(mode).test"]))
            // A spoofed MX record: a host outside the policy, with a valid certificate for its own name.
            try domain("spoofed-\(mode).test", mode: mode, policyMX: "mx.spoofed-\(mode).test", mxName: "evil.attacker-\(mode).test",
                       behaviour: .starttls, leaf: ca.issue(dnsNames: ["evil.attacker-\(mode).test"]))
        }
        let dns = try DNSMasq(lines: zone, address: "127.0.4.53", fixedPort: 53)

        // The daemon.
        let daemonPort = TestServer.freePort()
        let config = dir.appendingPathComponent("mtasts.yml").path
        try """
            host: 127.0.0.1
            port: \(daemonPort)
            cache:
              type: sqlite
              options:
                filename: \(dir.path)/policy-cache.db
            tlsrpt_database: \(dir.path)/tlsrpt.db
            reporting:
              organization: Test Sender
              submitter: localdomain
            dns_server: \(dns.server)
            ca_file: \(caFile)
            system_roots: false
            policy_port: \(policyPort)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let daemon = try Spawned(CLI.binary.path, ["daemon", "--config", config], stderrPath: dir.appendingPathComponent("mtasts.log").path)
        defer { daemon.stop() }

        // Postfix in its own directories; the smtp client's TLS policy from the daemon.
        let etc = dir.appendingPathComponent("etc")
        try FileManager.default.createDirectory(at: etc, withIntermediateDirectories: true)
        let maillog = dir.appendingPathComponent("maillog").path
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
            smtp_tls_policy_maps = socketmap:inet:127.0.0.1:\(daemonPort):postfix
            smtp_connect_timeout = 5s
            smtp_helo_timeout = 10s
            queue_run_delay = 300s
            minimal_backoff_time = 300s
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
        try "nameserver 127.0.4.53\noptions attempts:1 timeout:2\n".write(to: resolv, atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "\(dir.path)/spool", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(dir.path)/data", withIntermediateDirectories: true)
        _ = try CLI.program("/bin/chown", ["postfix", "\(dir.path)/data"])
        let check = try CLI.program("/usr/sbin/postfix", ["-c", etc.path, "check"])
        #expect(check.status == 0, "postfix check: \(check.stdout)")
        let postfix = try Spawned("/usr/bin/unshare", ["-m", "/bin/sh", "-c",
                                                       "mount --bind \(resolv.path) /etc/resolv.conf && exec /usr/sbin/postfix -c \(etc.path) start-fg"],
                                  stderrPath: dir.appendingPathComponent("postfix.err").path, stdoutPath: maillog)
        defer {
            _ = try? CLI.program("/usr/sbin/postfix", ["-c", etc.path, "stop"])
            postfix.stop()
        }
        var started = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: "\(dir.path)/spool/pid/master.pid") && Date() < started { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!postfix.hasExited, "\((try? String(contentsOfFile: dir.appendingPathComponent("postfix.err").path, encoding: .utf8)) ?? "")")

        // One message to each domain.
        let domains = ["enforce", "testing"].flatMap { m in ["good", "strip", "forged", "spoofed"].map { "\($0)-\(m).test" } }
        for d in domains {
            let message = "From: sender@localdomain\nTo: postmaster@\(d)\nSubject: to \(d)\n\nhello \(d)\n"
            let out = try CLI.program("/usr/sbin/sendmail", ["-C", etc.path, "-f", "sender@localdomain", "postmaster@\(d)"], stdin: Data(message.utf8))
            #expect(out.status == 0, "\(out.stderr)")
        }
        // Wait until every message was either delivered or deferred once.
        func queue() throws -> [[String: Any]] {
            let out = try CLI.program("/usr/sbin/postqueue", ["-c", etc.path, "-j"])
            return out.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }
        func deferredReasons() throws -> [String: String] {
            var reasons: [String: String] = [:]
            for m in try queue() where m["queue_name"] as? String == "deferred" {
                for r in (m["recipients"] as? [[String: Any]]) ?? [] {
                    if let address = r["address"] as? String { reasons[address] = r["delay_reason"] as? String ?? "" }
                }
            }
            return reasons
        }
        started = Date().addingTimeInterval(60)
        while (mail.messages.count + (try deferredReasons().count)) < domains.count && Date() < started { Thread.sleep(forTimeInterval: 0.25) }
        let log = (try? String(contentsOfFile: maillog, encoding: .utf8)) ?? ""
        let reasons = try deferredReasons()

        // enforce: the attacks are deferred, the mail still queued, and those MX got nothing.
        let strip = reasons["postmaster@strip-enforce.test"] ?? ""
        #expect(strip.contains("TLS is required, but was not offered"), "\(reasons)\n\(log)")
        #expect((reasons["postmaster@forged-enforce.test"] ?? "").contains("Server certificate not verified"), "\(reasons)")
        #expect((reasons["postmaster@spoofed-enforce.test"] ?? "").contains("Server certificate not verified"), "\(reasons)")
        #expect(reasons.count == 3, "\(reasons)")
        let receivedBy = Dictionary(grouping: mail.messages, by: \.host)
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

        // Postfix 3.7 has no TLSRPT: `mtasts collect-log` reads the same outcomes from its log, with
        // the policies the daemon cached and the _smtp._tls records from DNS.
        let collected = try CLI.run(["collect-log", maillog, "--config", config, "--json"])
        #expect(collected.status == 0, "\(collected.stderr)")
        #expect((collected.json as? [String: Any])?["stored"] as? Int == 8, "\(collected.stdout)\n\(log)")
        let out = dir.appendingPathComponent("reports")
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
        _ = (servers, dns)
    }
}
