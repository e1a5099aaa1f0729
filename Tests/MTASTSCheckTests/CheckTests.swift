import Foundation
import NIOCore
import Testing
import TestSupport

/// The loopback world: dnsmasq serving a zone, policy hosts and MX hosts with certificates from a
/// CA made here, one loopback address per host, all policy hosts on one port and all MX on another.
final class World: @unchecked Sendable {
    let ca: TestCA
    let otherCA: TestCA
    var dns: DNSMasq!
    let policyPort = TestServer.freePort()
    let smtpPort = TestServer.freePort()
    let caFile: String
    let dir: URL
    var servers: [TestServer] = []
    var openssl: Spawned?
    /// The policy of dynamic.test, changed by the `check --watch` test between rounds.
    let dynamicPolicy = PolicyBox(body: "version: STSv1\nmode: testing\nmx: mx.dynamic.test\nmax_age: 86400\n")

    static let enforceGood = "version: STSv1\nmode: enforce\nmx: mx.good.test\nmax_age: 604800\n"

    init() throws {
        ca = try TestCA()
        otherCA = try TestCA(commonName: "Some Other CA")
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("mtasts-world-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        caFile = try ca.writePEM(to: dir)

        var zone: [String] = []
        var n = 10
        func address() -> String { n += 1; return "127.0.0.\(n)" }
        // A domain with a policy host (behaviour, certificate) and one MX (behaviour, certificate).
        func domain(_ d: String, policy: PolicyBehaviour?, policyLeaf: TestCA.Leaf? = nil, mx: SMTPBehaviour? = .starttls, mxLeaf: TestCA.Leaf? = nil, mxName: String? = nil, sts: [String]? = nil, tlsrpt: Bool = true) throws {
            for record in sts ?? ["v=STSv1; id=\(d.replacingOccurrences(of: ".", with: ""))1;"] {
                zone.append("txt-record=_mta-sts.\(d),\"\(record)\"")
            }
            if tlsrpt { zone.append("txt-record=_smtp._tls.\(d),\"v=TLSRPTv1; rua=mailto:tlsrpt@good.test\"") }
            if let policy {
                let a = address()
                zone.append("host-record=mta-sts.\(d),\(a)")
                servers.append(try TestServer.policyHost(address: a, port: policyPort, leaf: policyLeaf ?? ca.issue(dnsNames: ["mta-sts.\(d)"]), behaviour: policy))
            }
            let mxHost = mxName ?? "mx.\(d)"
            zone.append("mx-host=\(d),\(mxHost),10")
            if let mx {
                let a = address()
                zone.append("host-record=\(mxHost),\(a)")
                servers.append(try TestServer.mx(address: a, port: smtpPort, hostname: mxHost, leaf: mxLeaf ?? ca.issue(dnsNames: [mxHost]), behaviour: mx))
            }
        }
        func policy(_ text: String, type: String? = "text/plain") -> PolicyBehaviour { .respond(status: 200, contentType: type, body: text) }
        func enforce(_ d: String) -> String { "version: STSv1\nmode: enforce\nmx: mx.\(d)\nmax_age: 604800\n" }

        try domain("good.test", policy: policy(World.enforceGood))
        try domain("expired.test", policy: policy(enforce("expired.test")), policyLeaf: ca.issue(dnsNames: ["mta-sts.expired.test"], validity: .expired))
        try domain("wrongname.test", policy: policy(enforce("wrongname.test")), policyLeaf: ca.issue(dnsNames: ["wrongname.test"]))
        try domain("untrusted.test", policy: policy(enforce("untrusted.test")), policyLeaf: otherCA.issue(dnsNames: ["mta-sts.untrusted.test"]))
        try domain("cnonly.test", policy: policy(enforce("cnonly.test")), policyLeaf: ca.issue(dnsNames: [], commonName: "mta-sts.cnonly.test"))
        try domain("wildcard.test", policy: policy(enforce("wildcard.test")), policyLeaf: ca.issue(dnsNames: ["*.wildcard.test"]))
        try domain("redirect.test", policy: .respond(status: 301, contentType: "text/html", body: "moved", extraHeaders: ["Location: https://elsewhere.test/mta-sts.txt"]))
        try domain("notfound.test", policy: .respond(status: 404, contentType: "text/plain", body: enforce("notfound.test")))
        try domain("html.test", policy: policy(enforce("html.test"), type: "text/html"))
        try domain("big.test", policy: .large(size: 100 * 1024, announceLength: true))
        try domain("chunked.test", policy: .large(size: 100 * 1024, announceLength: false))
        try domain("trickle.test", policy: .trickle(body: enforce("trickle.test"), interval: .milliseconds(250)))
        try domain("badpolicy.test", policy: policy("version: STSv1\nmode: Enforce\nmx: mx.badpolicy.test\nmax_age: 604800\n"))
        try domain("nostarttls.test", policy: policy(enforce("nostarttls.test")), mx: .noSTARTTLS)
        try domain("stall.test", policy: policy(enforce("stall.test")), mx: .stallAfterBanner)
        try domain("mxexpired.test", policy: policy(enforce("mxexpired.test")), mxLeaf: ca.issue(dnsNames: ["mx.mxexpired.test"], validity: .expired))
        try domain("mxwrongname.test", policy: policy(enforce("mxwrongname.test")), mxLeaf: ca.issue(dnsNames: ["other.example"]))
        try domain("mxuntrusted.test", policy: policy(enforce("mxuntrusted.test")), mxLeaf: otherCA.issue(dnsNames: ["mx.mxuntrusted.test"]))
        try domain("uncovered.test", policy: policy("version: STSv1\nmode: enforce\nmx: mail.uncovered.test\nmax_age: 604800\n"))
        try domain("tworecords.test", policy: policy(enforce("tworecords.test")), sts: ["v=STSv1; id=a1;", "v=STSv1; id=b2;"])
        try domain("notlsrpt.test", policy: policy(enforce("notlsrpt.test")), tlsrpt: false)
        try domain("nopolicyhost.test", policy: nil)

        // DNS shapes: a null MX, an MX that is a CNAME, an MX without an address, a rua whose
        // domain takes no mail, TLSA on an MX, a policy pattern that matches no MX.
        zone.append(#"txt-record=_mta-sts.nullmx.test,"v=STSv1; id=n1;""#)
        zone.append("dns-rr=nullmx.test,15,000000")
        try domain("mxcname.test", policy: policy("version: STSv1\nmode: testing\nmx: mxalias.mxcname.test\nmax_age: 86400\n"), mx: nil, mxName: "mxalias.mxcname.test")
        zone.append("cname=mxalias.mxcname.test,mx.good.test")
        try domain("noaddr.test", policy: policy(enforce("noaddr.test")), mx: nil)
        zone.append(#"txt-record=_smtp._tls.badrua.test,"v=TLSRPTv1; rua=mailto:reports@nomail.test""#)
        try domain("badrua.test", policy: policy(enforce("badrua.test")), tlsrpt: false)
        zone.append("dns-rr=_25._tcp.mx.dane.test,52,030101AABBCCDD")
        try domain("dane.test", policy: policy(enforce("dane.test")))
        try domain("spf.test", policy: policy(enforce("spf.test")), sts: ["v=STSv1; id=s1;", "v=spf1 -all"])
        zone.append("cname=_mta-sts.cnamed.test,_mta-sts.good.test")
        try domain("cnamed.test", policy: policy(enforce("cnamed.test")), sts: [])
        try domain("badrecord.test", policy: policy(enforce("badrecord.test")), sts: ["v=STSv1; id=bad-id;"])
        try domain("shortage.test", policy: policy("version: STSv1\nmode: enforce\nmx: mx.shortage.test\nmax_age: 86400\n"))
        try domain("twotlsrpt.test", policy: policy(enforce("twotlsrpt.test")), tlsrpt: false)
        zone.append(#"txt-record=_smtp._tls.twotlsrpt.test,"v=TLSRPTv1; rua=mailto:a@good.test""#)
        zone.append(#"txt-record=_smtp._tls.twotlsrpt.test,"v=TLSRPTv1; rua=mailto:b@good.test""#)
        try domain("expiring.test", policy: policy(enforce("expiring.test")), policyLeaf: ca.issue(dnsNames: ["mta-sts.expiring.test"], validity: .expiringIn(days: 5)))
        try domain("dynamic.test", policy: .dynamic(dynamicPolicy))
        try domain("unusedpattern.test", policy: policy("version: STSv1\nmode: enforce\nmx: mx.unusedpattern.test\nmx: *.old.example\nmax_age: 604800\n"))

        // An independent TLS peer: openssl s_server -WWW serving the policy file from a folder.
        let a = address()
        zone.append(#"txt-record=_mta-sts.openssl.test,"v=STSv1; id=o1;""#)
        zone.append("host-record=mta-sts.openssl.test,\(a)")
        zone.append("mx-host=openssl.test,mx.good.test,10")
        let www = dir.appendingPathComponent("www/.well-known")
        try FileManager.default.createDirectory(at: www, withIntermediateDirectories: true)
        try "version: STSv1\nmode: testing\nmx: mx.good.test\nmax_age: 86400\n".write(to: www.appendingPathComponent("mta-sts.txt"), atomically: true, encoding: .utf8)
        let leaf = try ca.issue(dnsNames: ["mta-sts.openssl.test"])
        try leaf.certificatePEM.write(to: dir.appendingPathComponent("openssl.crt"), atomically: true, encoding: .utf8)
        try leaf.keyPEM.write(to: dir.appendingPathComponent("openssl.key"), atomically: true, encoding: .utf8)
        // s_server -WWW serves files relative to its working directory.
        let command = "cd '\(dir.appendingPathComponent("www").path)' && exec /usr/bin/openssl s_server -quiet -WWW -accept \(a):\(policyPort) -cert '\(dir.appendingPathComponent("openssl.crt").path)' -key '\(dir.appendingPathComponent("openssl.key").path)'"
        let p = try Spawned("/bin/sh", ["-c", command])
        openssl = p

        dns = try DNSMasq(lines: zone, failing: ["broken.example"])
        Thread.sleep(forTimeInterval: 0.3)  // let openssl bind
    }

    func check(_ domains: [String], _ extra: [String] = []) throws -> CLI.Output {
        try CLI.run(["check", "--json", "--dns-server", dns.server, "--ca-file", caFile, "--policy-port", "\(policyPort)",
                     "--smtp-port", "\(smtpPort)", "--timeout", "2"] + extra + domains)
    }

    deinit {
        openssl?.stop()
        try? FileManager.default.removeItem(at: dir)
    }
}

@Suite(.serialized) struct CheckTests {
    static let world = Result { try World() }

    func reports(_ output: CLI.Output) throws -> [String: [String: Any]] {
        let array = try #require(output.json as? [[String: Any]], "not JSON: \(output.stdout.prefix(500)) \(output.stderr.prefix(500))")
        var out: [String: [String: Any]] = [:]
        for r in array { out[r["domain"] as! String] = r }
        return out
    }

    func codes(_ report: [String: Any]?, _ severity: String? = nil) -> [String] {
        ((report?["findings"] as? [[String: Any]]) ?? []).filter { severity == nil || $0["severity"] as? String == severity }.compactMap { $0["code"] as? String }
    }

    @Test func goodDomainPasses() throws {
        let world = try CheckTests.world.get()
        let out = try world.check(["good.test"])
        #expect(out.status == 0, "\(out.stdout)\n\(out.stderr)")
        let r = try #require(try reports(out)["good.test"])
        #expect(codes(r, "error").isEmpty)
        #expect(r["verdict"] as? String == "ok")
        #expect(r["sts_id"] as? String == "goodtest1")
        let policy = try #require(r["policy"] as? [String: Any])
        #expect(policy["mode"] as? String == "enforce")
        let mx = try #require((r["mx"] as? [[String: Any]])?.first)
        #expect(mx["host"] as? String == "mx.good.test")
        #expect(mx["pattern"] as? String == "mx.good.test")
        #expect(mx["result"] as? String == "ok")
        #expect(mx["starttls"] as? Bool == true)
        #expect((mx["tls_version"] as? String)?.hasPrefix("TLSv1.") == true)
        #expect(codes(r).contains("mx-tls-ok"))
        let host = try #require(r["policy_host"] as? [String: Any])
        #expect(host["status"] as? Int == 200)
        // Human output names the verdict and the MX.
        let human = try CLI.run(["check", "--dns-server", world.dns.server, "--ca-file", world.caFile, "--policy-port", "\(world.policyPort)", "--smtp-port", "\(world.smtpPort)", "good.test"], environment: ["NO_COLOR": "1"])
        #expect(human.stdout.contains("good.test: OK"))
        #expect(human.stdout.contains("mx 10 mx.good.test: matches mx.good.test, TLS ok"))
    }

    @Test func everyFailureHasItsCode() throws {
        let world = try CheckTests.world.get()
        let expectations: [(String, String)] = [
            ("expired.test", "sts-webpki-invalid"),
            ("wrongname.test", "sts-webpki-invalid"),
            ("untrusted.test", "sts-webpki-invalid"),
            ("cnonly.test", "sts-webpki-invalid"),
            ("redirect.test", "sts-policy-fetch-error"),
            ("notfound.test", "sts-policy-fetch-error"),
            ("big.test", "sts-policy-fetch-error"),
            ("chunked.test", "sts-policy-fetch-error"),
            ("trickle.test", "sts-policy-fetch-error"),
            ("badpolicy.test", "sts-policy-invalid"),
            ("nostarttls.test", "starttls-not-supported"),
            ("mxexpired.test", "certificate-expired"),
            ("mxwrongname.test", "certificate-host-mismatch"),
            ("mxuntrusted.test", "certificate-not-trusted"),
            ("uncovered.test", "mx-not-in-policy"),
            ("tworecords.test", "sts-record-multiple-records"),
            ("nopolicyhost.test", "sts-policy-fetch-error"),
        ]
        let out = try world.check(expectations.map(\.0) + ["wildcard.test", "html.test", "stall.test", "notlsrpt.test", "openssl.test"], ["--concurrency", "8"])
        #expect(out.status == 1)
        let all = try reports(out)
        for (domain, code) in expectations {
            #expect(codes(all[domain], "error").contains(code), "\(domain): expected \(code), got \(codes(all[domain]))")
            #expect(all[domain]?["verdict"] as? String == "errors", "\(domain)")
        }
        // Reasons a person can act on.
        let messages = { (d: String) in ((all[d]?["findings"] as? [[String: Any]]) ?? []).compactMap { $0["message"] as? String }.joined(separator: " | ") }
        #expect(messages("expired.test").contains("the certificate expired on"))
        #expect(messages("mxexpired.test").contains("the certificate expired on"))
        #expect(messages("wrongname.test").contains("not mta-sts.wrongname.test"))
        #expect(messages("untrusted.test").contains("does not chain to a trusted root"))
        #expect(messages("cnonly.test").contains("CN is not used"))
        #expect(messages("redirect.test").contains("redirect (301) to https://elsewhere.test/mta-sts.txt"))
        #expect(messages("big.test").contains("larger than 65536"))
        #expect(messages("trickle.test").contains("no complete answer"))
        #expect(messages("badpolicy.test").contains("line 2"))
        // Warnings, not errors.
        #expect(codes(all["wildcard.test"], "error").isEmpty, "\(codes(all["wildcard.test"]))")
        // text/html: an error, and the policy is not treated as applied (as the daemon refuses it).
        #expect(codes(all["html.test"], "error").contains("policy-content-type"))
        #expect(all["html.test"]?["policy"] is NSNull, "\(String(describing: all["html.test"]?["policy"]))")
        #expect(codes(all["stall.test"], "warning").contains("mx-unreachable"))
        #expect(codes(all["notlsrpt.test"], "warning").contains("tlsrpt-record-missing"))
        // The openssl peer serves a valid testing policy.
        #expect(codes(all["openssl.test"], "error").isEmpty, "\(codes(all["openssl.test"]))")
        #expect((all["openssl.test"]?["policy"] as? [String: Any])?["mode"] as? String == "testing")
        // Results come in input order.
        let order = try #require(out.json as? [[String: Any]]).map { $0["domain"] as! String }
        #expect(Array(order.prefix(3)) == ["expired.test", "wrongname.test", "untrusted.test"])
    }

    @Test func dnsShapes() throws {
        let world = try CheckTests.world.get()
        let out = try world.check(["nullmx.test", "mxcname.test", "noaddr.test", "badrua.test", "dane.test", "unusedpattern.test", "expiring.test", "spf.test", "cnamed.test",
                                   "nothing.test", "badrecord.test", "shortage.test", "twotlsrpt.test"])
        let all = try reports(out)
        #expect(codes(all["nullmx.test"]).contains("null-mx"), "\(codes(all["nullmx.test"]))")
        #expect(codes(all["mxcname.test"], "warning").contains("mx-is-cname"), "\(codes(all["mxcname.test"]))")
        #expect(((all["mxcname.test"]?["mx"] as? [[String: Any]])?.first?["cname"] as? String) == "mx.good.test")
        #expect(codes(all["noaddr.test"], "error").contains("mx-no-address"), "\(codes(all["noaddr.test"]))")
        #expect(codes(all["badrua.test"], "warning").contains("tlsrpt-rua-no-mx"), "\(codes(all["badrua.test"]))")
        #expect(codes(all["dane.test"], "info").contains("dane-tlsa"), "\(codes(all["dane.test"]))")
        #expect(((all["dane.test"]?["mx"] as? [[String: Any]])?.first?["tlsa"] as? Bool) == true)
        #expect(codes(all["unusedpattern.test"], "warning").contains("policy-mx-unused"), "\(codes(all["unusedpattern.test"]))")
        #expect(codes(all["unusedpattern.test"], "error").isEmpty)
        // An SPF record beside the _mta-sts record; an _mta-sts record reached through a CNAME.
        #expect(codes(all["spf.test"], "warning").contains("sts-record-spf"), "\(codes(all["spf.test"]))")
        #expect(all["spf.test"]?["sts_id"] as? String == "s1")
        #expect(codes(all["cnamed.test"], "info").contains("sts-record-cname"), "\(codes(all["cnamed.test"]))")
        #expect(all["cnamed.test"]?["sts_id"] as? String == "goodtest1")
        // Mode and max_age advice reach the checker's findings.
        #expect(codes(all["mxcname.test"], "info").contains("policy-mode-testing"), "\(codes(all["mxcname.test"]))")
        // No records at all; a record with a bad id; a short max_age in enforce; two TLS-RPT records.
        #expect(codes(all["nothing.test"], "error").contains("sts-record-missing"), "\(codes(all["nothing.test"]))")
        #expect(codes(all["badrecord.test"], "error").contains("sts-record-bad-id"), "\(codes(all["badrecord.test"]))")
        #expect(codes(all["shortage.test"], "info").contains("policy-max-age-short-enforce"), "\(codes(all["shortage.test"]))")
        #expect(codes(all["twotlsrpt.test"], "error").contains("tlsrpt-record-multiple-records"), "\(codes(all["twotlsrpt.test"]))")
        // A policy certificate that expires in 5 days: a warning with the count.
        #expect(codes(all["expiring.test"], "warning").contains("policy-certificate-expiring"), "\(codes(all["expiring.test"]))")
        let expiring = ((all["expiring.test"]?["findings"] as? [[String: Any]]) ?? []).first { $0["code"] as? String == "policy-certificate-expiring" }
        #expect((expiring?["message"] as? String)?.contains("expires in 5 days") == true)
    }

    /// The AD bit: a record the resolver validated with DNSSEC is reported as such.
    @Test func dnssecStatus() throws {
        let fake = try FakeDNS(txt: ["_mta-sts.signed.test": "v=STSv1; id=sig1;"])
        let out = try CLI.run(["check", "--json", "--dns-server", fake.server, "--no-smtp", "--timeout", "2", "signed.test"])
        let r = try #require(try reports(out)["signed.test"])
        #expect(codes(r, "info").contains("dnssec-signed"), "\(codes(r))")
        #expect(r["sts_id"] as? String == "sig1")
        let world = try CheckTests.world.get()
        #expect(codes(try reports(try world.check(["good.test"], ["--no-smtp"]))["good.test"], "info").contains("dnssec-unsigned"))
    }

    @Test func exitCodesAndOptions() throws {
        let world = try CheckTests.world.get()
        // A temporary DNS failure: exit 3.
        let broken = try world.check(["x.broken.example"])
        #expect(broken.status == 3, "\(broken.stdout)")
        #expect(codes(try reports(broken)["x.broken.example"]).contains("dns-temporary"))
        // --no-smtp: no MX is probed.
        let noSMTP = try world.check(["nostarttls.test"], ["--no-smtp"])
        #expect(!codes(try reports(noSMTP)["nostarttls.test"]).contains("starttls-not-supported"))
        // --file with comments.
        let list = world.dir.appendingPathComponent("domains.txt")
        try "# domains\ngood.test\n\nwildcard.test\n".write(to: list, atomically: true, encoding: .utf8)
        let fromFile = try world.check([], ["--file", list.path])
        #expect(try reports(fromFile).keys.sorted() == ["good.test", "wildcard.test"])
        // Usage errors.
        #expect(try CLI.run(["check"]).status == 2)
        #expect(try CLI.run(["check", "--dns-server", "nonsense", "good.test"]).status == 2)
    }
}

extension CheckTests {
    @Test("check --watch: rounds kept in the database, what changed between them said, the exit code of the last round")
    func watchRounds() throws {
        let world = try CheckTests.world.get()
        let db = world.dir.appendingPathComponent("watch-\(UUID().uuidString.prefix(6)).db").path
        world.dynamicPolicy.set(body: "version: STSv1\nmode: testing\nmx: mx.dynamic.test\nmax_age: 86400\n")
        DispatchQueue.global().asyncAfter(deadline: .now() + 1.5) {
            world.dynamicPolicy.set(body: "version: STSv1\nmode: enforce\nmx: mx.dynamic.test\nmax_age: 86400\n")
        }
        let out = try world.check(["dynamic.test"], ["--watch", "--interval", "3", "--rounds", "2", "--database", db])
        #expect(out.status == 0, "\(out.stdout) \(out.stderr)")
        let rounds = out.stdout.split(separator: "\n").map { jsonObject(String($0)) }
        #expect(rounds.count == 2)
        #expect(rounds.first?["changes"] is NSNull)
        let changes = rounds.last?["changes"] as? [String] ?? []
        #expect(changes.contains("policy mode testing → enforce") && changes.contains("policy text changed"), "\(changes)")
        // The kept results: a third run compares with the second.
        let again = try world.check(["dynamic.test"], ["--watch", "--rounds", "1", "--database", db])
        #expect((jsonObject(again.stdout)["changes"] as? [String]) == [], "\(again.stdout)")
        // Text form says it too; bad combinations are usage errors.
        let bad = try world.check(["dynamic.test"], ["--rounds", "1"])
        #expect(bad.status == 2)
    }
}

func jsonObject(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
}
