import Foundation
import Testing
import TestSupport

/// curl, the independent HTTP client: returns (status, body).
func curl(_ arguments: [String]) throws -> (status: Int, body: String) {
    let out = try CLI.run(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"] + arguments, executable: URL(fileURLWithPath: "/usr/bin/curl"))
    guard let last = out.stdout.split(separator: "\n", omittingEmptySubsequences: false).last, let code = Int(last) else {
        throw PostgresServer.Missing(description: "curl failed: \(out.stderr)")
    }
    return (code, String(out.stdout.dropLast(last.count + 1)))
}

func jsonObject(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
}

/// What the interop reports add up to, from the expectations computed independently (Python's
/// json/email modules) in interop-reports.json: each distinct (organisation, report-id) once.
struct InteropTotals {
    var reports = 0
    var successful = 0
    var failed = 0
    var byType: [String: Int] = [:]

    init(files: (String) -> Bool) throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("MTASTSCoreTests/Vectors/interop-reports.json")
        let all = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var seen = Set<String>()
        for (file, value) in all.sorted(by: { $0.key < $1.key }) where files(file) {
            guard let e = value as? [String: Any], let org = e["organization"] as? String, let id = e["report_id"] as? String else { continue }
            guard seen.insert(org + "\u{0}" + id).inserted else { continue }
            reports += 1
            successful += e["successful"] as? Int ?? 0
            failed += e["failed"] as? Int ?? 0
            for (type, n) in e["failures"] as? [String: Int] ?? [:] { byType[type, default: 0] += n }
        }
    }
}

func interopFiles(_ predicate: (String) -> Bool) -> [String] {
    let root = CLI.interop.appendingPathComponent("reports")
    let e = FileManager.default.enumerator(atPath: root.path)!
    var out: [String] = []
    while let p = e.nextObject() as? String {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: root.appendingPathComponent(p).path, isDirectory: &isDir), !isDir.boolValue, predicate(p) { out.append(p) }
    }
    return out.sorted()
}

/// A report JSON made by the test (RFC 8460 §4.4 shape).
func report(org: String, id: String, day: String, domain: String, mode: String = "testing", ok: Int, failures: [(type: String, count: Int, mx: String, ip: String)] = []) -> String {
    let details = failures.map { f in
        #"{"result-type":"\#(f.type)","sending-mta-ip":"192.0.2.1","receiving-mx-hostname":"\#(f.mx)","receiving-ip":"\#(f.ip)","failed-session-count":\#(f.count)}"#
    }.joined(separator: ",")
    let failed = failures.reduce(0) { $0 + $1.count }
    return """
        {"organization-name":"\(org)","date-range":{"start-datetime":"\(day)T00:00:00Z","end-datetime":"\(day)T23:59:59Z"},
         "contact-info":"tls@\(org.lowercased()).test","report-id":"\(id)",
         "policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: \(mode)","mx: mx.\(domain)","max_age: 86400"],
           "policy-domain":"\(domain)","mx-host":["mx.\(domain)"]},
           "summary":{"total-successful-session-count":\(ok),"total-failure-session-count":\(failed)},
           "failure-details":[\(details)]}]}
        """
}

func day(_ offset: Int) -> String {
    let f = DateFormatter()
    f.dateFormat = "yyyy-MM-dd"
    f.timeZone = TimeZone(identifier: "UTC")
    return f.string(from: Date(timeIntervalSince1970: 1_780_000_000 + Double(offset) * 86_400))
}

@Suite(.serialized) struct ReceiverTests {
    let dir: URL

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("receiver-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    // MARK: HTTPS report endpoint

    /// Every interop report (JSON, gzip, base64, extracted attachments) POSTed with curl; the
    /// totals are the independently computed ones; mail goes through `reports ingest` on stdin.
    func interopThroughServe(database: String) throws {
        let server = try Serve(dir: dir, database: database)
        let root = CLI.interop.appendingPathComponent("reports")
        let bodies = interopFiles { !$0.hasSuffix(".eml") }
        #expect(bodies.count > 40)
        for file in bodies {
            let type = file.hasSuffix(".gz") ? "application/tlsrpt+gzip" : "application/tlsrpt+json"
            let r = try curl(["--data-binary", "@" + root.appendingPathComponent(file).path, "-H", "Content-Type: \(type)", server.base + "/tlsrpt"])
            #expect(r.status == 201 || r.status == 200, "\(file): \(r.status) \(r.body)")
        }
        let expectHTTP = try InteropTotals { !$0.hasSuffix(".eml") }
        let summary = try CLI.run(["reports", "summary", "--json", "--database", database])
        let s = jsonObject(summary.stdout)
        #expect(s["successful"] as? Int == expectHTTP.successful)
        #expect(s["failed"] as? Int == expectHTTP.failed)
        var byType: [String: Int] = [:]
        for row in s["by-result-type"] as? [[String: Any]] ?? [] { byType[row["result-type"] as! String] = row["failed"] as? Int }
        #expect(byType == expectHTTP.byType)
        let listed = try CLI.run(["reports", "list", "--json", "--limit", "10000", "--database", database])
        #expect((listed.json as? [Any])?.count == expectHTTP.reports)

        // The same report again: 200, stored once.
        let again = try curl(["--data-binary", "@" + root.appendingPathComponent(bodies[0]).path, server.base + "/tlsrpt"])
        #expect(again.status == 200)
        #expect((jsonObject(again.body)["already-stored"] as? [Int])?.count == 1)

        // Mail on standard input, as from a pipe transport.
        for file in interopFiles({ $0.hasSuffix(".eml") }) {
            let out = try CLI.run(["reports", "ingest", "--dkim", "ignore", "--database", database], stdin: try Data(contentsOf: root.appendingPathComponent(file)))
            #expect(out.status == 0, "\(file): \(out.stderr)")
        }
        let all = try InteropTotals { _ in true }
        let s2 = jsonObject(try CLI.run(["reports", "summary", "--json", "--database", database]).stdout)
        #expect(s2["successful"] as? Int == all.successful)
        #expect(s2["failed"] as? Int == all.failed)
        let listedAll = try CLI.run(["reports", "list", "--json", "--limit", "10000", "--database", database])
        #expect((listedAll.json as? [Any])?.count == all.reports)
        // The API answers the same as the CLI.
        let api = try curl([server.base + "/api/summary"])
        #expect(api.status == 200)
        #expect(jsonObject(api.body)["successful"] as? Int == all.successful)
        // A stored report keeps its raw bytes.
        let first = try CLI.run(["reports", "show", "1", "--raw", "--database", database])
        #expect(first.status == 0 && !first.stdout.isEmpty)
    }

    @Test func interopReportsOverHTTPAndMailSQLite() throws {
        try interopThroughServe(database: dir.appendingPathComponent("reports.db").path)
    }

    @Test func interopReportsOverHTTPAndMailPostgres() throws {
        let pg = try PostgresServer()
        defer { pg.stop() }
        try interopThroughServe(database: pg.dsn)
    }

    @Test func hostileBodies() throws {
        let server = try Serve(dir: dir, database: dir.appendingPathComponent("hostile.db").path)
        // A gzip bomb: 200 MB of zeros in ~200 KB; refused while inflating (at 10 MB), never held whole.
        let bomb = dir.appendingPathComponent("bomb.gz").path
        let made = try CLI.run(["-c", "head -c 200000000 /dev/zero | gzip -9 > \(bomb)"], executable: URL(fileURLWithPath: "/bin/sh"))
        #expect(made.status == 0)
        let r1 = try curl(["--data-binary", "@" + bomb, "-H", "Content-Type: application/tlsrpt+gzip", server.base + "/tlsrpt"])
        #expect(r1.status == 413, "\(r1.body)")
        #expect(r1.body.contains("inflates to more than"))
        // 20 MB: refused from its Content-Length, before the body is read.
        let big = dir.appendingPathComponent("big").path
        _ = try CLI.run(["-c", "head -c 20000000 /dev/urandom > \(big)"], executable: URL(fileURLWithPath: "/bin/sh"))
        let r2 = try curl(["--data-binary", "@" + big, server.base + "/tlsrpt"])
        #expect(r2.status == 413)
        // Chunked without a length: refused as it passes the limit.
        let r3 = try curl(["-H", "Transfer-Encoding: chunked", "--data-binary", "@" + big, server.base + "/tlsrpt"])
        #expect(r3.status == 413)
        // Not a report: 400 with a reason; non-UTF-8, truncated gzip, JSON of the wrong shape.
        for (body, label) in [("\u{FF}\u{FE}garbage", "binary"), ("{\"a\": 1}", "wrong shape"), ("", "empty")] {
            let r = try curl(["--data-binary", body, server.base + "/tlsrpt"])
            #expect(r.status == 400, "\(label): \(r.status)")
            #expect(r.body.contains("not a TLS report"), "\(label): \(r.body)")
        }
        let gz = dir.appendingPathComponent("r.json.gz").path
        try Data(report(org: "T", id: "t1", day: day(0), domain: "t.test", ok: 1).utf8).write(to: URL(fileURLWithPath: gz + ".src"))
        _ = try CLI.run(["-c", "gzip -c \(gz).src | head -c 60 > \(gz)"], executable: URL(fileURLWithPath: "/bin/sh"))
        let truncated = try curl(["--data-binary", "@" + gz, "-H", "Content-Type: application/tlsrpt+gzip", server.base + "/tlsrpt"])
        #expect(truncated.status == 400)
        // GET on the endpoint, unknown paths.
        #expect(try curl([server.base + "/tlsrpt"]).status == 405)
        #expect(try curl([server.base + "/nothing"]).status == 404)
        // Still serving after all that, and nothing was stored.
        #expect(try curl([server.base + "/healthz"]).status == 200)
        #expect((try CLI.run(["reports", "list", "--json", "--database", dir.appendingPathComponent("hostile.db").path]).json as? [Any])?.count == 0)
        #expect(!server.process.hasExited)
    }

    @Test func apiTokenAndCSV() throws {
        let db = dir.appendingPathComponent("token.db").path
        let server = try Serve(dir: dir, database: db, extra: "reports:\n  api_token: s3cret\n")
        let posted = try curl(["--data-binary", report(org: "T", id: "tok-1", day: day(0), domain: "tok.test", ok: 7, failures: [(type: "starttls-not-supported", count: 2, mx: "mx.tok.test", ip: "192.0.2.5")]), server.base + "/tlsrpt"])
        #expect(posted.status == 201)  // posting needs no token: senders have none
        #expect(try curl([server.base + "/api/summary"]).status == 401)
        #expect(try curl(["-H", "Authorization: Bearer wrong", server.base + "/api/summary"]).status == 401)
        let ok = try curl(["-H", "Authorization: Bearer s3cret", server.base + "/api/summary"])
        #expect(ok.status == 200 && jsonObject(ok.body)["failed"] as? Int == 2)
        // CSV forms of list and summary.
        let list = try CLI.run(["reports", "list", "--csv", "--database", db]).stdout.split(separator: "\r\n")
        #expect(list.count == 2 && list[1].contains(",T,tok-1,tok.test,7,2,https,"))
        let summary = try CLI.run(["reports", "summary", "--csv", "--database", db]).stdout.split(separator: "\r\n")
        #expect(summary == ["domain,day,reports,successful,failed,success_rate", "tok.test,\(day(0)),1,7,2,0.7778"])
    }

    // MARK: policy host

    @Test func policyHostPerHostNameWithSNI() throws {
        let ca = try TestCA()
        let caFile = try ca.writePEM(to: dir)
        var tls = "tls:\n"
        for name in ["a.test", "b.test"] {
            let leaf = try ca.issue(dnsNames: ["mta-sts.\(name)"])
            try leaf.certificatePEM.write(to: dir.appendingPathComponent("\(name).crt"), atomically: true, encoding: .utf8)
            try leaf.keyPEM.write(to: dir.appendingPathComponent("\(name).key"), atomically: true, encoding: .utf8)
            tls += "  - hosts: [mta-sts.\(name)]\n    certificate: \(dir.path)/\(name).crt\n    key: \(dir.path)/\(name).key\n"
        }
        // The b.test policy is pasted from `mtasts policy init` output.
        let initOut = try CLI.run(["policy", "init", "--domain", "b.test", "--mx", "mx1.b.test", "--mx", "*.b.test", "--mode", "enforce", "--write-policy", dir.appendingPathComponent("b.txt").path])
        #expect(initOut.status == 0, "\(initOut.stderr)")
        let policies = """
            policies:
              a.test:
                mode: testing
                mx: [mx.a.test]
                max_age: 86400
              b.test:
                file: \(dir.path)/b.txt
              c.test: |
                version: STSv1
                mode: none
                max_age: 86400
            """
        let server = try Serve(dir: dir, database: dir.appendingPathComponent("p.db").path, extra: tls + policies)
        func get(_ host: String, _ path: String = "/.well-known/mta-sts.txt", insecure: Bool = false) throws -> (Int, String) {
            try curl(["--cacert", caFile, "--resolve", "\(host):\(server.port):127.0.0.1", "-D", dir.appendingPathComponent("headers").path]
                     + (insecure ? ["-k"] : []) + ["https://\(host):\(server.port)\(path)"])
        }
        let (sa, a) = try get("mta-sts.a.test")
        #expect(sa == 200)
        #expect(a == "version: STSv1\r\nmode: testing\r\nmx: mx.a.test\r\nmax_age: 86400\r\n")
        let headers = try String(contentsOf: dir.appendingPathComponent("headers"), encoding: .utf8).lowercased()
        #expect(headers.contains("content-type: text/plain"))
        // b.test: its own certificate (curl verifies the name), its own policy, which lints clean.
        let (sb, b) = try get("mta-sts.b.test")
        #expect(sb == 200)
        #expect(b.contains("mode: enforce") && b.contains("mx: mx1.b.test") && b.contains("mx: *.b.test"))
        let lint = try CLI.run(["policy", "lint", "-"], stdin: Data(b.utf8))
        #expect(lint.status == 0, "\(lint.stdout)")
        // A policy pasted into the YAML as a block, served with CRLF (its host has no certificate of its own).
        let (sc, c) = try get("mta-sts.c.test", insecure: true)
        #expect(sc == 200 && c == "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n")
        // Nothing else on a policy host; unknown policy hosts are 404.
        #expect(try get("mta-sts.a.test", "/").0 == 404)
        #expect(try get("mta-sts.a.test", "/api/summary").0 == 404)
        #expect(try get("mta-sts.d.test", insecure: true).0 == 404)
        // With SNI for an unknown name the default (first) certificate is served: curl refuses it.
        let wrong = try CLI.run(["-sS", "--cacert", caFile, "--resolve", "mta-sts.d.test:\(server.port):127.0.0.1", "https://mta-sts.d.test:\(server.port)/.well-known/mta-sts.txt"], executable: URL(fileURLWithPath: "/usr/bin/curl"))
        #expect(wrong.status != 0)
    }

    // MARK: mail

    @Test func maildirAndMboxAreTakenOnce() throws {
        let db = dir.appendingPathComponent("mail.db").path
        let root = CLI.interop.appendingPathComponent("reports")
        let mails = interopFiles { $0.hasSuffix(".eml") && !$0.contains("empty") }
        let maildir = dir.appendingPathComponent("Maildir")
        for sub in ["new", "cur", "tmp"] { try FileManager.default.createDirectory(at: maildir.appendingPathComponent(sub), withIntermediateDirectories: true) }
        for (i, m) in mails.enumerated() {
            try FileManager.default.copyItem(at: root.appendingPathComponent(m), to: maildir.appendingPathComponent("new/\(1000 + i).M\(i).host"))
        }
        // A message that is not a report sits among them: taken, logged, not an error.
        try "From: a@b.test\nSubject: hello\n\nnot a report\n".write(to: maildir.appendingPathComponent("new/9999.x.host"), atomically: true, encoding: .utf8)
        let first = try CLI.run(["reports", "ingest", "--maildir", maildir.path, "--dkim", "ignore", "--json", "--database", db])
        #expect(first.status == 0, "\(first.stderr)")
        let t1 = jsonObject(first.stdout)
        #expect(t1["messages"] as? Int == mails.count + 1)
        #expect(t1["not-reports"] as? Int == 1)
        let expected = try InteropTotals { mails.contains($0) }
        #expect(t1["stored"] as? Int == expected.reports)
        #expect(try FileManager.default.contentsOfDirectory(atPath: maildir.appendingPathComponent("new").path).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: maildir.appendingPathComponent("cur").path).allSatisfy { $0.hasSuffix(":2,S") })
        let second = try CLI.run(["reports", "ingest", "--maildir", maildir.path, "--dkim", "ignore", "--json", "--database", db])
        #expect(jsonObject(second.stdout)["messages"] as? Int == 0)

        // mbox (mboxrd quoting) into a fresh database; a re-run takes nothing; appended mail is taken.
        let mboxDB = dir.appendingPathComponent("mbox.db").path
        var mbox = Data()
        for m in mails {
            mbox += Data("From MAILER-DAEMON Mon Nov 30 00:00:00 2026\n".utf8)
            let text = String(decoding: try Data(contentsOf: root.appendingPathComponent(m)), as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
            mbox += Data(text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasPrefix("From ") ? ">" + $0 : String($0) }.joined(separator: "\n").utf8)
            mbox += Data("\n".utf8)
        }
        let mboxPath = dir.appendingPathComponent("tlsrpt.mbox").path
        try mbox.write(to: URL(fileURLWithPath: mboxPath))
        let m1 = jsonObject(try CLI.run(["reports", "ingest", "--mbox", mboxPath, "--dkim", "ignore", "--json", "--database", mboxDB]).stdout)
        #expect(m1["messages"] as? Int == mails.count)
        #expect(m1["stored"] as? Int == expected.reports)
        let m2 = jsonObject(try CLI.run(["reports", "ingest", "--mbox", mboxPath, "--dkim", "ignore", "--json", "--database", mboxDB]).stdout)
        #expect(m2["messages"] as? Int == 0)
        let extra = "From MAILER-DAEMON Mon Nov 30 00:00:00 2026\nFrom: r@s.test\nContent-Type: application/tlsrpt+json\n\n" + report(org: "Appended", id: "ap-1", day: day(0), domain: "ap.test", ok: 3) + "\n"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: mboxPath))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(extra.utf8))
        try handle.close()
        let m3 = jsonObject(try CLI.run(["reports", "ingest", "--mbox", mboxPath, "--dkim", "ignore", "--json", "--database", mboxDB]).stdout)
        #expect(m3["messages"] as? Int == 1)
        #expect(m3["stored"] as? Int == 1)
    }

    @Test func temporaryFailureIsExitSeventyFive() throws {
        let mail = try Data(contentsOf: CLI.interop.appendingPathComponent("reports/mox/microsoft.eml"))
        // PostgreSQL that is not there: the MTA must keep the message and retry.
        let out = try CLI.run(["reports", "ingest", "--database", "host=127.0.0.1 port=\(TestServer.freePort()) user=x dbname=x connect_timeout=2"], stdin: mail)
        #expect(out.status == 75, "\(out.stderr)")
        // A message that is not a report does not bounce.
        let junk = try CLI.run(["reports", "ingest", "--database", dir.appendingPathComponent("j.db").path], stdin: Data("Subject: hi\n\nhello\n".utf8))
        #expect(junk.status == 0)
        #expect(junk.stderr.contains("not a TLS report"))
    }

    // MARK: DKIM

    @Test func dkimVerifiedAgainstIndependentSigner() throws {
        try DKIMPy.check()
        let python = DKIMPy.python
        let keyPath = dir.appendingPathComponent("dkim.key").path
        let gen = try CLI.run(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", keyPath], executable: URL(fileURLWithPath: "/usr/bin/openssl"))
        #expect(gen.status == 0)
        let pub = try CLI.run(["pkey", "-in", keyPath, "-pubout", "-outform", "DER"], executable: URL(fileURLWithPath: "/usr/bin/openssl"))
        _ = pub
        let der = try CLI.run(["-c", "openssl pkey -in \(keyPath) -pubout -outform DER | base64 -w0"], executable: URL(fileURLWithPath: "/bin/sh")).stdout
        let dns = try DNSMasq(lines: ["txt-record=tlsrpt._domainkey.sender.test,\"v=DKIM1; k=rsa; p=\(der)\""])
        let unsigned = """
            From: TLS reports <tlsrpt@sender.test>\r
            To: tlsrpt@receiver.test\r
            Subject: Report Domain: receiver.test Submitter: sender.test Report-ID: <dk-1@sender.test>\r
            Date: Mon, 30 Nov 2026 00:00:00 +0000\r
            Message-ID: <dk-1@sender.test>\r
            TLS-Report-Domain: receiver.test\r
            TLS-Report-Submitter: sender.test\r
            MIME-Version: 1.0\r
            Content-Type: multipart/report; report-type="tlsrpt"; boundary="b1"\r
            \r
            --b1\r
            Content-Type: text/plain\r
            \r
            A TLS report.\r
            --b1\r
            Content-Type: application/tlsrpt+json\r
            \r
            \(report(org: "Sender", id: "dk-1", day: day(0), domain: "receiver.test", ok: 5).replacingOccurrences(of: "\n", with: "\r\n"))\r
            --b1--\r

            """
        let unsignedPath = dir.appendingPathComponent("unsigned.eml").path
        try unsigned.write(toFile: unsignedPath, atomically: true, encoding: .utf8)
        let signedPath = dir.appendingPathComponent("signed.eml").path
        let sign = try CLI.run(["-c", """
            import dkim,sys
            msg=open(sys.argv[1],'rb').read(); key=open(sys.argv[2],'rb').read()
            sig=dkim.sign(msg,b'tlsrpt',b'sender.test',key,include_headers=[b'from',b'to',b'subject',b'date',b'message-id',b'content-type'],canonicalize=(b'relaxed',b'simple'))
            open(sys.argv[3],'wb').write(sig+msg)
            """, unsignedPath, keyPath, signedPath], executable: URL(fileURLWithPath: python))
        #expect(sign.status == 0, "\(sign.stderr)")
        let signed = try Data(contentsOf: URL(fileURLWithPath: signedPath))
        let db = dir.appendingPathComponent("dkim.db").path
        let common = ["reports", "ingest", "--dns-server", dns.server, "--database", db, "--verbose"]
        // Signed: pass, stored with the result.
        let ok = try CLI.run(common + ["--dkim", "require"], stdin: signed)
        #expect(ok.status == 0)
        #expect(ok.stderr.contains("stored as #1") && ok.stderr.contains("DKIM pass d=sender.test s=tlsrpt"), "\(ok.stderr)")
        // LF line ends (as a pipe transport hands it over) verify the same.
        let lf = Data(String(decoding: signed, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n").utf8)
        let okLF = try CLI.run(common + ["--dkim", "require"], stdin: lf)
        #expect(okLF.stderr.contains("already stored") && okLF.stderr.contains("DKIM pass"), "\(okLF.stderr)")
        // Tampered body: the report count changed after signing → refused under require.
        let tampered = Data(String(decoding: signed, as: UTF8.self).replacingOccurrences(of: "\"total-successful-session-count\":5", with: "\"total-successful-session-count\":6").replacingOccurrences(of: "dk-1\"", with: "dk-2\"").utf8)
        let bad = try CLI.run(common + ["--dkim", "require"], stdin: tampered)
        #expect(bad.status == 0)
        #expect(bad.stderr.contains("refused") && bad.stderr.contains("body hash mismatch"), "\(bad.stderr)")
        // Tampered header (Subject is signed).
        let header = Data(String(decoding: signed, as: UTF8.self).replacingOccurrences(of: "Report-ID: <dk-1", with: "Report-ID: <dk-9").utf8)
        let badHeader = try CLI.run(common + ["--dkim", "require"], stdin: header)
        #expect(badHeader.stderr.contains("signature mismatch"), "\(badHeader.stderr)")
        // Unsigned: refused under require; stored with "none" under record.
        let noSig = try CLI.run(common + ["--dkim", "require"], stdin: Data(unsigned.replacingOccurrences(of: "dk-1", with: "dk-3").utf8))
        #expect(noSig.stderr.contains("refused"))
        let recorded = try CLI.run(common + ["--dkim", "record"], stdin: Data(unsigned.replacingOccurrences(of: "dk-1", with: "dk-4").utf8))
        #expect(recorded.stderr.contains("stored as") && recorded.stderr.contains("DKIM none"), "\(recorded.stderr)")
        // An l= signature is refused even though it verifies.
        let lsig = try CLI.run(["-c", """
            import dkim,sys
            msg=open(sys.argv[1],'rb').read().replace(b'dk-1',b'dk-5'); key=open(sys.argv[2],'rb').read()
            sys.stdout.buffer.write(dkim.sign(msg,b'tlsrpt',b'sender.test',key,length=True)+msg)
            """, unsignedPath, keyPath], executable: URL(fileURLWithPath: python))
        let withL = try CLI.run(common + ["--dkim", "require"], stdin: Data(lsig.stdout.utf8))
        #expect(withL.stderr.contains("l= (body length limit) is refused"), "\(withL.stderr)")
        // DNS down while the key is looked up: exit 75 (the MTA keeps the mail and retries),
        // never a refused report; nothing is stored.
        let downDB = dir.appendingPathComponent("dns-down.db").path
        let down = try CLI.run(["reports", "ingest", "--dns-server", "127.0.0.1:\(TestServer.freePort())", "--database", downDB, "--dkim", "require"], stdin: signed)
        #expect(down.status == 75, "\(down.status) \(down.stderr)")
        #expect(!down.stderr.contains("refused"), "\(down.stderr)")
        #expect((try CLI.run(["reports", "list", "--json", "--database", downDB]).json as? [[String: Any]])?.isEmpty == true)
        // The stored results: one pass (dk-1), one none (dk-4).
        let list = try CLI.run(["reports", "list", "--json", "--database", db]).json as? [[String: Any]] ?? []
        #expect(Set(list.compactMap { $0["dkim"] as? String }) == ["pass", "none"])
        #expect(list.count == 2)
    }

    // MARK: analysis

    /// Reports made by the test over 10 days; the summary and readiness verdicts are checked
    /// against numbers worked out by hand.
    @Test func summaryAndReadinessAgainstHandComputedNumbers() throws {
        let db = dir.appendingPathComponent("ready.db").path
        let server = try Serve(dir: dir, database: db)
        var bodies: [String] = []
        for d in 0..<10 {
            // ready.test: Google 100/day, Microsoft 50/day, never a failure.
            bodies.append(report(org: "Google", id: "g-r-\(d)", day: day(d), domain: "ready.test", ok: 100))
            bodies.append(report(org: "Microsoft", id: "m-r-\(d)", day: day(d), domain: "ready.test", ok: 50))
            // notyet.test: Google 200/day; Microsoft 40/day, and on days 3 and 4 also 2 certificate-expired at mx2.
            bodies.append(report(org: "Google", id: "g-n-\(d)", day: day(d), domain: "notyet.test", ok: 200))
            let fails = d == 3 || d == 4 ? [(type: "certificate-expired", count: 2, mx: "mx2.notyet.test", ip: "198.51.100.7")] : []
            bodies.append(report(org: "Microsoft", id: "m-n-\(d)", day: day(d), domain: "notyet.test", ok: 40, failures: fails))
        }
        // young.test: three days only.
        for d in 7..<10 { bodies.append(report(org: "Google", id: "g-y-\(d)", day: day(d), domain: "young.test", ok: 10)) }
        for body in bodies {
            let r = try curl(["--data-binary", body, "-H", "Content-Type: application/tlsrpt+json", server.base + "/tlsrpt"])
            #expect(r.status == 201, "\(r.body)")
        }
        let until = day(9)
        // Summary of notyet.test: 10×200 + 10×40 = 2400 ok, 4 failed; failures all certificate-expired at mx2.
        let s = jsonObject(try CLI.run(["reports", "summary", "--domain", "notyet.test", "--json", "--database", db]).stdout)
        #expect(s["successful"] as? Int == 2400)
        #expect(s["failed"] as? Int == 4)
        #expect((s["days"] as? [Any])?.count == 10)
        let types = s["by-result-type"] as? [[String: Any]] ?? []
        #expect(types.count == 1 && types.first?["result-type"] as? String == "certificate-expired" && types.first?["failed"] as? Int == 4)
        let mx = s["by-mx-host"] as? [[String: Any]] ?? []
        #expect(mx.first?["mx-host"] as? String == "mx2.notyet.test")
        let orgs = s["by-organization"] as? [[String: Any]] ?? []
        #expect(orgs.first?["organization"] as? String == "Microsoft" && orgs.first?["failed"] as? Int == 4 && orgs.first?["successful"] as? Int == 400)
        // Trend: days 0–4 had 1200 ok and 4 failed, days 5–9 1200 ok and none: 99.67 % → 100 %.
        let trend = (s["trends"] as? [[String: Any]])?.first
        #expect(((trend?["earlier"] as? [String: Any])?["success-rate"] as? Double) == 0.9967)
        #expect(((trend?["later"] as? [String: Any])?["success-rate"] as? Double) == 1.0)
        #expect((trend?["earlier"] as? [String: Any])?["to"] as? String == day(4) && (trend?["later"] as? [String: Any])?["from"] as? String == day(5))
        #expect(trend?["change"] as? Double == 0.0033)
        // Since day 4: days 4…9 → 6×240 = 1440 ok, 2 failed.
        let since = jsonObject(try CLI.run(["reports", "summary", "--domain", "notyet.test", "--since", day(4), "--json", "--database", db]).stdout)
        #expect(since["successful"] as? Int == 1440 && since["failed"] as? Int == 2)

        // Readiness.
        let ready = try CLI.run(["reports", "readiness", "ready.test", "--until", until, "--json", "--database", db])
        #expect(ready.status == 0, "\(ready.stdout)")
        let rj = jsonObject(ready.stdout)
        #expect(rj["verdict"] as? String == "ready")
        #expect(rj["successful"] as? Int == 1500 && (rj["days-with-reports"] as? [Any])?.count == 10)
        let notyet = try CLI.run(["reports", "readiness", "notyet.test", "--until", until, "--json", "--database", db])
        #expect(notyet.status == 1)
        let nj = jsonObject(notyet.stdout)
        #expect(nj["verdict"] as? String == "not-ready")
        let problems = nj["problems"] as? [[String: Any]] ?? []
        #expect(problems.count == 1)
        #expect(problems.first?["organization"] as? String == "Microsoft")
        #expect(problems.first?["result-type"] as? String == "certificate-expired")
        #expect(problems.first?["sessions"] as? Int == 4)
        #expect(problems.first?["days"] as? [String] == [day(3), day(4)])
        #expect(problems.first?["mx-hosts"] as? [String] == ["mx2.notyet.test"])
        // 4 of 2404 sessions: within a 0.5 % tolerance, so ready with it.
        let tolerant = try CLI.run(["reports", "readiness", "notyet.test", "--until", until, "--tolerance", "0.5", "--database", db])
        #expect(tolerant.status == 0, "\(tolerant.stdout)")
        // Only days 5…9 (the failures are older): ready.
        let recent = try CLI.run(["reports", "readiness", "notyet.test", "--until", until, "--days", "5", "--min-days", "5", "--json", "--database", db])
        #expect(recent.status == 0)
        let young = try CLI.run(["reports", "readiness", "young.test", "--until", until, "--json", "--database", db])
        #expect(young.status == 1)
        #expect(jsonObject(young.stdout)["verdict"] as? String == "insufficient-data")
        let nothing = try CLI.run(["reports", "readiness", "absent.test", "--until", until, "--database", db])
        #expect(nothing.status == 1 && nothing.stdout.contains("not enough data"))
        // The same verdict over the API.
        let api = try curl([server.base + "/api/readiness/notyet.test?until=\(until)"])
        #expect(jsonObject(api.body)["verdict"] as? String == "not-ready")
        // Export: JSON of every report, CSV of every failure detail.
        let export = try CLI.run(["reports", "export", "--format", "json", "--database", db])
        #expect((export.json as? [Any])?.count == bodies.count)
        let csv = try CLI.run(["reports", "export", "--format", "csv", "--domain", "notyet.test", "--database", db])
        let lines = csv.stdout.split(separator: "\r\n")
        #expect(lines.count == 3)
        #expect(lines.first?.hasPrefix("day,policy_domain,organization") == true)
    }
}
