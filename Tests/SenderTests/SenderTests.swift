import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import Testing
import TestSupport

/// The exact datagrams of libtlsrpt-datagrams.md (examples A and B), and variations the
/// collector must accept byte for byte.
enum Datagrams {
    static let a = #"{"dpv": "1","d": "d0.example","pr": "v=TLSRPTv1; rua=mailto:tlsrpt@d0.example","policies":[{"policy-type":2,"policy-domain": "d0.example","policy-string":["version: STSv1","mode: enforce","mx: mx.d0.example","max_age: 604800"],"mx-host":["mx.d0.example"],"failure-details":[{"c":205,"s": "192.0.2.1","n": "mx.d0.example","h": "250-mx.d0.example\r\n250 STARTTLS","r": "198.51.100.0","f": "self-signed_certificate"}],"t":1,"f":1}]}"#
    static let b = #"{"dpv": "1","d": "example.com","pr": "v=TLSRPTv1;rua=mailto:tlsrpt@example.com","policies":[{"policy-type":9,"t":0,"f":0}]}"#

    /// A libtlsrpt-shaped datagram for `domain`, with one failure detail of `code` (nil: success).
    static func make(domain: String, record: String, type: Int = 2, code: Int? = nil, additional: [UInt8]? = nil, dpv: Bool = true,
                     policyDomain: Bool = true, mx: String = "mx.x.test") -> [UInt8] {
        var out = Array("{".utf8)
        if dpv { out += Array(#""dpv": "1","#.utf8) }
        out += Array(#""d": "\#(domain)","pr": "\#(record)","policies":[{"policy-type":\#(type),"#.utf8)
        if policyDomain { out += Array(#""policy-domain": "\#(domain.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: ".")))","#.utf8) }
        if type == 2 { out += Array(#""policy-string":["version: STSv1","mode: testing","mx: \#(mx)","max_age: 86400"],"mx-host":["\#(mx)"],"#.utf8) }
        if let code {
            out += Array(#""failure-details":[{"c":\#(code),"s": "192.0.2.9","n": "\#(mx)","r": "198.51.100.9""#.utf8)
            if let additional { out += Array(#","a": ""#.utf8) + additional + Array("\"".utf8) }
            out += Array(#"}],"t":1,"f":1}]}"#.utf8)
        } else {
            out += Array(#""t":0,"f":0}]}"#.utf8)
        }
        return out
    }
}

/// Sends datagrams to a unix datagram socket with MSG_DONTWAIT, as libtlsrpt does. A full
/// receive queue (EAGAIN) is waited out and counted, so every datagram arrives.
final class DatagramSender {
    let fd: Int32
    let path: String
    var eagain = 0

    init(path: String) {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
    }
    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        while true {
            let n = bytes.withUnsafeBytes { raw in
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            }
            if n == bytes.count { return }
            if errno == EAGAIN || errno == EWOULDBLOCK { eagain += 1; usleep(200); continue }
            throw PostgresServer.Missing(description: "sendto \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// `mtasts daemon` with a collector, started by the test.
final class CollectorDaemon: @unchecked Sendable {
    let dir: URL
    let config: String
    let log: String
    let socket: String
    var process: Spawned

    init(dir: URL, database: String, extra: String = "", name: String = "c") throws {
        self.dir = dir
        socket = dir.appendingPathComponent("\(name).sock").path
        config = dir.appendingPathComponent("\(name).yml").path
        log = dir.appendingPathComponent("\(name).log").path
        try """
            host: 127.0.0.1
            port: \(TestServer.freePort())
            cache:
              type: internal
            tlsrpt_database: "\(database)"
            collector:
              socket: \(socket)
              mode: 0660
              group: postfix
              quarantine: \(dir.appendingPathComponent("\(name).quarantine").path)
            \(extra)

            """.write(toFile: config, atomically: true, encoding: .utf8)
        process = try Self.spawn(config: config, log: log)
    }

    static func spawn(config: String, log: String) throws -> Spawned {
        let p = try Spawned(CLI.binary.path, ["daemon", "--config", config], stderrPath: log)
        try p.waitForLog(log, contains: "socketmap on", what: "the daemon")
        return p
    }

    func restart() throws {
        try? FileManager.default.removeItem(atPath: log)
        process = try Self.spawn(config: config, log: log)
    }

    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// SIGTERM and wait for "stopped" (the collector commits what it holds).
    func stop() {
        if let child = process.childPID { kill(child, SIGTERM) }
        let deadline = Date().addingTimeInterval(20)
        while !process.hasExited && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
    }
}

/// A local HTTPS report endpoint (TestSupport's HTTP server): answers with the statuses given in
/// turn (the last one repeats), or hangs; keeps every body it got as a file.
final class ReportEndpoint {
    let dir: URL
    let server: HTTPTestServer
    var port: Int { server.port }

    init(dir: URL, leaf: TestCA.Leaf, statuses: [Int], hang: Bool = false) throws {
        self.dir = dir
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let count = NIOLockedValueBox(0)
        let router = Router()
        router.post("**") { request, _ -> Response in
            if hang { try await Task.sleep(for: .seconds(3600)) }
            let body = try await request.body.collect(upTo: 16 << 20)
            let i = count.withLockedValue { n in defer { n += 1 }; return n }
            let type = (request.headers[.contentType] ?? "").replacingOccurrences(of: "/", with: "_")
            try Data(body.readableBytesView).write(to: dir.appendingPathComponent(String(format: "post-%d-%@.bin", i, type)))
            return Response(status: .init(code: statuses[min(i, statuses.count - 1)]), body: .init(byteBuffer: ByteBuffer(string: "ok")))
        }
        server = try HTTPTestServer(address: "127.0.0.1", port: TestServer.freePort(), leaf: leaf, router: router)
    }

    var bodies: [URL] {
        ((try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)) ?? []).filter { $0.lastPathComponent.hasPrefix("post-") }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }
}

func gunzip(_ url: URL) throws -> [String: Any] {
    let out = try CLI.run(["-dc", url.path], executable: URL(fileURLWithPath: "/bin/gzip"))
    return (try JSONSerialization.jsonObject(with: Data(out.stdout.utf8))) as? [String: Any] ?? [:]
}

func today() -> String { String(ISO8601DateFormatter().string(from: Date()).prefix(10)) }

@Suite(.serialized) struct SenderTests {
    let dir: URL

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sender-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    func built(_ database: String, extra: [String] = []) throws -> [String: [String: Any]] {
        let config = dir.appendingPathComponent("build.yml").path
        try "reporting:\n  organization: Test Sender\n  submitter: sender.test\n  contact: mailto:postmaster@sender.test\n".write(toFile: config, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("out-\(UUID().uuidString.prefix(6))")
        let r = try CLI.run(["reports", "build", "--day", today(), "--out", out.path, "--config", config, "--database", database] + extra)
        #expect(r.status == 0, "\(r.stderr)")
        var reports: [String: [String: Any]] = [:]
        for file in try FileManager.default.contentsOfDirectory(at: out, includingPropertiesForKeys: nil) where file.pathExtension == "gz" {
            let json = try gunzip(file)
            let domain = ((json["policies"] as? [[String: Any]])?.first?["policy"] as? [String: Any])?["policy-domain"] as? String ?? "?"
            reports[domain] = json
            // §5.1 filename: sender!policy-domain!begin!end!id.json.gz
            let parts = file.lastPathComponent.split(separator: "!")
            #expect(parts.count == 5 && parts[0] == "sender.test" && parts[1] == domain, "\(file.lastPathComponent)")
        }
        return reports
    }

    @Test func datagramsBecomeReportsFieldByField() throws {
        let db = dir.appendingPathComponent("c.db").path
        let metricsPort = TestServer.freePort()
        let daemon = try CollectorDaemon(dir: dir, database: db, extra: "metrics:\n  port: \(metricsPort)")
        var mode = stat()
        #expect(stat(daemon.socket, &mode) == 0 && mode.st_mode & 0o777 == 0o660)
        // The group Postfix's smtp(8) runs as may write to it.
        #expect(mode.st_gid == getgrnam("postfix")?.pointee.gr_gid)
        let sender = DatagramSender(path: daemon.socket)
        // A × 3, B × 5: byte for byte as libtlsrpt sends them.
        for _ in 0..<3 { try sender.send(Array(Datagrams.a.utf8)) }
        for _ in 0..<5 { try sender.send(Array(Datagrams.b.utf8)) }
        // Every code, on codes.test; escapes, non-UTF-8, no dpv, no policy-domain, trailing dot.
        let record = "v=TLSRPTv1; rua=mailto:r@codes.test"
        for code in [201, 202, 203, 204, 205, 301, 302, 303, 304, 305, 306] {
            try sender.send(Datagrams.make(domain: "codes.test", record: record, code: code))
        }
        try sender.send(Datagrams.make(domain: "codes.test", record: record))
        try sender.send(Datagrams.make(domain: "Esc.TEST.", record: "v=TLSRPTv1; rua=mailto:r@esc.test", code: 205,
                                       additional: Array(#"quote\" backslash\\ tab\t nl\n ctl\u0001 utf8 ä"#.utf8), dpv: false))
        try sender.send(Datagrams.make(domain: "raw.test", record: "v=TLSRPTv1; rua=mailto:r@raw.test", code: 205, additional: [0x62, 0xFF, 0xFE, 0x61]))
        try sender.send(Datagrams.make(domain: "nopd.test", record: "v=TLSRPTv1; rua=mailto:r@nopd.test", type: 9, policyDomain: false))
        // A 200 KB datagram (a long additional-information), and broken ones.
        try sender.send(Datagrams.make(domain: "big.test", record: "v=TLSRPTv1; rua=mailto:r@big.test", code: 205, additional: [UInt8](repeating: UInt8(ascii: "x"), count: 200_000)))
        for bad in ["", "{", "[1,2]", #"{"d": "x.test"}"#, #"{"d": "x.test","pr": "v","policies":[{"policy-type":7,"f":0}]}"#] { try sender.send(Array(bad.utf8)) }
        Thread.sleep(forTimeInterval: 1.5)
        // The counters, as Prometheus reads them: 8 + 12 + 4 good datagrams and 5 malformed, all received.
        let metrics = try CLI.run(["-s", "http://127.0.0.1:\(metricsPort)/metrics"], executable: URL(fileURLWithPath: "/usr/bin/curl")).stdout
        #expect(metrics.contains("mtasts_tlsrpt_datagrams_received_total 29"), "\(metrics)")
        #expect(metrics.contains("mtasts_tlsrpt_datagrams_malformed_total 5"))
        #expect(metrics.contains("mtasts_tlsrpt_datagrams_committed_total 24"))
        #expect(metrics.contains("mtasts_tlsrpt_datagrams_repaired_total 1"))
        daemon.stop()
        #expect(daemon.logText.contains("stopped"))
        #expect(daemon.logText.contains("malformed datagram"))
        let quarantined = (try? String(contentsOfFile: dir.appendingPathComponent("c.quarantine").path, encoding: .utf8)) ?? ""
        #expect(quarantined.split(separator: "\n").count == 5)

        let reports = try built(db)
        #expect(Set(reports.keys) == ["d0.example", "example.com", "codes.test", "esc.test", "raw.test", "nopd.test", "big.test"])
        // Example A × 3: one sts policy, 0 ok, 3 failed, one failure detail for 3 sessions, every field.
        let a = reports["d0.example"]!
        #expect(a["organization-name"] as? String == "Test Sender")
        #expect(a["contact-info"] as? String == "mailto:postmaster@sender.test")
        let range = a["date-range"] as? [String: String]
        #expect(range?["start-datetime"] == "\(today())T00:00:00Z" && range?["end-datetime"] == "\(today())T23:59:59Z")
        #expect((a["report-id"] as? String)?.hasPrefix("\(today())T00:00:00Z_d0.example_") == true)
        let pa = (a["policies"] as! [[String: Any]])[0]
        let policy = pa["policy"] as! [String: Any]
        #expect(policy["policy-type"] as? String == "sts")
        #expect(policy["policy-string"] as? [String] == ["version: STSv1", "mode: enforce", "mx: mx.d0.example", "max_age: 604800"])
        #expect(policy["mx-host"] as? [String] == ["mx.d0.example"])
        #expect((pa["summary"] as? [String: Int])! == ["total-successful-session-count": 0, "total-failure-session-count": 3])
        let fa = (pa["failure-details"] as! [[String: Any]])[0]
        #expect(fa["result-type"] as? String == "validation-failure")
        #expect(fa["sending-mta-ip"] as? String == "192.0.2.1")
        #expect(fa["receiving-mx-hostname"] as? String == "mx.d0.example")
        #expect(fa["receiving-mx-helo"] as? String == "250-mx.d0.example\r\n250 STARTTLS")
        #expect(fa["receiving-ip"] as? String == "198.51.100.0")
        #expect(fa["failure-reason-code"] as? String == "self-signed_certificate")
        #expect(fa["failed-session-count"] as? Int == 3)
        // Example B × 5: no-policy-found, policy-domain filled in, 5 successful.
        let pb = (reports["example.com"]!["policies"] as! [[String: Any]])[0]
        #expect((pb["policy"] as! [String: Any])["policy-type"] as? String == "no-policy-found")
        #expect((pb["policy"] as! [String: Any])["policy-domain"] as? String == "example.com")
        #expect((pb["summary"] as? [String: Int])?["total-successful-session-count"] == 5)
        // Every code became its RFC 8460 result type, once each; plus one success.
        let pc = (reports["codes.test"]!["policies"] as! [[String: Any]])[0]
        #expect((pc["summary"] as? [String: Int])! == ["total-successful-session-count": 1, "total-failure-session-count": 11])
        let types = Set((pc["failure-details"] as! [[String: Any]]).compactMap { $0["result-type"] as? String })
        #expect(types == ["starttls-not-supported", "certificate-host-mismatch", "certificate-not-trusted", "certificate-expired", "validation-failure",
                          "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid", "tlsa-invalid", "dnssec-invalid", "dane-required"])
        // Escapes decoded; the domain lowercased without its dot; non-UTF-8 repaired, not refused.
        let fe = ((reports["esc.test"]!["policies"] as! [[String: Any]])[0]["failure-details"] as! [[String: Any]])[0]
        #expect(fe["additional-information"] as? String == "quote\" backslash\\ tab\t nl\n ctl\u{01} utf8 ä")
        let fr = ((reports["raw.test"]!["policies"] as! [[String: Any]])[0]["failure-details"] as! [[String: Any]])[0]
        #expect(fr["additional-information"] as? String == "b\u{FFFD}\u{FFFD}a")
        #expect(((reports["big.test"]!["policies"] as! [[String: Any]])[0]["failure-details"] as! [[String: Any]])[0]["additional-information"].map { ($0 as! String).count } == 200_000)
        #expect(((reports["nopd.test"]!["policies"] as! [[String: Any]])[0]["policy"] as! [String: Any])["policy-domain"] as? String == "nopd.test")
        // Our own receiver reads every built report as a valid RFC 8460 report.
        let status = try CLI.run(["reports", "status", "--json", "--database", db])
        let days = (status.json as? [String: Any])?["days"] as? [[String: Any]]
        #expect(days?.first?["successful"] as? Int == 5 + 1 + 1)
        #expect(days?.first?["failed"] as? Int == 3 + 11 + 3)
    }

    @Test func killNineLosesAtMostTheBatchInFlight() throws {
        let db = dir.appendingPathComponent("k.db").path
        let daemon = try CollectorDaemon(dir: dir, database: db, name: "k")
        let sender = DatagramSender(path: daemon.socket)
        let one = Datagrams.make(domain: "k.test", record: "v=TLSRPTv1; rua=mailto:r@k.test")
        for _ in 0..<500 { try sender.send(one) }
        Thread.sleep(forTimeInterval: 2)  // committed (flush_interval 1 s)
        for _ in 0..<100 { try sender.send(one) }
        let child = try #require(daemon.process.childPID)
        kill(child, SIGKILL)
        let deadline = Date().addingTimeInterval(10)
        while !daemon.process.hasExited && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        try daemon.restart()
        let sender2 = DatagramSender(path: daemon.socket)
        for _ in 0..<50 { try sender2.send(one) }
        Thread.sleep(forTimeInterval: 1.5)
        daemon.stop()
        let days = (try CLI.run(["reports", "status", "--json", "--database", db]).json as? [String: Any])?["days"] as? [[String: Any]]
        let stored = days?.first?["successful"] as? Int ?? 0
        // Everything committed before the kill and after the restart is there; at most the 100 in flight are lost.
        #expect(stored >= 550 && stored <= 650, "stored \(stored)")
        print("kill -9: \(650 - stored) of the 100 datagrams sent just before the kill were lost")
    }

    /// HTTPS delivery: 500 then 201 (a retry), a hanging endpoint (the time-out), and a real
    /// `mtasts serve` as the receiver; mail through a sendmail stub with a DKIM signature that
    /// dkimpy and our own receiver verify; SMTP submission with STARTTLS to a local sink.
    @Test func deliveryByHTTPSAndDKIMSignedMail() throws {
        let (caFile, leaf, cert, key) = try localhostCertificate()
        let flaky = try ReportEndpoint(dir: dir.appendingPathComponent("flaky"), leaf: leaf, statuses: [500, 201])
        let hang = try ReportEndpoint(dir: dir.appendingPathComponent("hang"), leaf: leaf, statuses: [201], hang: true)
        let receiverDB = dir.appendingPathComponent("received.db").path
        let serve = try Serve(dir: dir, database: receiverDB, extra: "tls:\n  - hosts: [localhost]\n    certificate: \(cert)\n    key: \(key)\n")
        // DKIM keys (RSA and Ed25519) and their records in a dnsmasq for our receiver.
        let rsaKey = dir.appendingPathComponent("rsa.pem").path, edKey = dir.appendingPathComponent("ed.pem").path
        _ = try CLI.run(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsaKey], executable: URL(fileURLWithPath: "/usr/bin/openssl"))
        _ = try CLI.run(["genpkey", "-algorithm", "ed25519", "-out", edKey], executable: URL(fileURLWithPath: "/usr/bin/openssl"))
        let sink = dir.appendingPathComponent("sendmail-out")
        try FileManager.default.createDirectory(at: sink, withIntermediateDirectories: true)
        let stub = dir.appendingPathComponent("sendmail").path
        try "#!/bin/sh\nf=\(sink.path)/$(date +%s%N)\necho \"$@\" > $f.args\ncat > $f.eml\n".write(toFile: stub, atomically: true, encoding: .utf8)
        chmod(stub, 0o755)

        // Sessions for three policy domains, one rua each: flaky HTTPS, hanging HTTPS, mail; and serve.
        let db = dir.appendingPathComponent("d.db").path
        let daemon = try CollectorDaemon(dir: dir, database: db, name: "d")
        let sender = DatagramSender(path: daemon.socket)
        try sender.send(Datagrams.make(domain: "flaky.test", record: "v=TLSRPTv1; rua=https://localhost:\(flaky.port)/report", code: 204))
        try sender.send(Datagrams.make(domain: "hang.test", record: "v=TLSRPTv1; rua=https://localhost:\(hang.port)/report"))
        try sender.send(Datagrams.make(domain: "mail.test", record: "v=TLSRPTv1; rua=mailto:tlsrpt@mail.test", code: 202))
        try sender.send(Datagrams.make(domain: "serve.test", record: "v=TLSRPTv1; rua=https://localhost:\(serve.port)/tlsrpt"))
        Thread.sleep(forTimeInterval: 1.5)
        daemon.stop()

        func config(_ keyPath: String) throws -> String {
            let path = dir.appendingPathComponent("send-\(UUID().uuidString.prefix(6)).yml").path
            try """
                tlsrpt_database: \(db)
                reporting:
                  organization: Test Sender
                  submitter: sender.test
                  from: tlsrpt@sender.test
                  https_timeout: 2
                  first_retry: 1
                  ca_file: \(caFile)
                  allow_private_rua: true
                  mail:
                    transport: sendmail
                    sendmail: \(stub)
                  dkim:
                    selector: tlsrpt
                    key: \(keyPath)

                """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let cfg = try config(rsaKey)
        let first = try CLI.run(["reports", "send", "--day", today(), "--config", cfg, "--json"])
        let attempts = first.json as? [[String: Any]] ?? []
        func status(_ uri: String) -> String? { attempts.first { ($0["uri"] as? String)?.contains(uri) == true }?["status"] as? String }
        #expect(status("localhost:\(flaky.port)") == "retry", "\(first.stdout) \(first.stderr)")
        #expect(status("localhost:\(hang.port)") == "retry")
        #expect((attempts.first { ($0["uri"] as? String)?.contains("\(hang.port)") == true }?["result"] as? String)?.contains("timed out") == true, "\(first.stdout)")
        #expect(status("mailto:tlsrpt@mail.test") == "sent")
        #expect(status("localhost:\(serve.port)") == "sent", "\(first.stdout)")
        // The retry, a second later: 201.
        Thread.sleep(forTimeInterval: 1.2)
        let second = try CLI.run(["reports", "send", "--day", today(), "--config", cfg, "--json"])
        let again = second.json as? [[String: Any]] ?? []
        #expect(again.first { ($0["uri"] as? String)?.contains("\(flaky.port)") == true }?["status"] as? String == "sent", "\(second.stdout)")
        #expect(!again.contains { ($0["uri"] as? String)?.contains("mail.test") == true })  // sent once, not again
        // The endpoint got the report twice (500, then 201), as application/tlsrpt+gzip.
        let posts = flaky.bodies
        #expect(posts.count == 2)
        #expect(posts.allSatisfy { $0.lastPathComponent.contains("application_tlsrpt+gzip") })
        #expect((try gunzip(posts[1])["policies"] as? [[String: Any]])?.count == 1)
        // mtasts serve stored it.
        #expect(try CLI.run(["reports", "summary", "--domain", "serve.test", "--json", "--database", receiverDB]).stdout.contains("\"successful\": 1"))
        // The ledger.
        let ledger = try CLI.run(["reports", "status", "--json", "--database", db])
        let deliveries = (ledger.json as? [String: Any])?["deliveries"] as? [[String: Any]] ?? []
        #expect(deliveries.count == 4)
        #expect(deliveries.first { ($0["uri"] as? String)?.contains("\(flaky.port)") == true }?["attempts"] as? Int == 2)

        // The mail: handed to sendmail with -f and the recipient, DKIM-signed, verified by dkimpy.
        let mails = try FileManager.default.contentsOfDirectory(at: sink, includingPropertiesForKeys: nil).filter { $0.pathExtension == "eml" }
        #expect(mails.count == 1)
        let args = try String(contentsOf: mails[0].deletingPathExtension().appendingPathExtension("args"), encoding: .utf8)
        #expect(args.contains("-f tlsrpt@sender.test") && args.contains("tlsrpt@mail.test"))
        let message = try Data(contentsOf: mails[0])
        let text = String(decoding: message, as: UTF8.self)
        #expect(text.contains("TLS-Required: No") && text.contains("report-type=\"tlsrpt\"") && text.contains("TLS-Report-Domain: mail.test"))
        #expect(text.hasPrefix("DKIM-Signature: v=1; a=rsa-sha256;"))
        try verifyWithDKIMPy(message, keyPath: rsaKey)
        // Our receiver: the signature verifies against the key served by dnsmasq, the report is stored.
        let der = try CLI.run(["-c", "openssl pkey -in \(rsaKey) -pubout -outform DER | base64 -w0"], executable: URL(fileURLWithPath: "/bin/sh")).stdout
        let dns = try DNSMasq(lines: ["txt-record=tlsrpt._domainkey.sender.test,\"v=DKIM1; k=rsa; p=\(der)\""])
        // `reports dkim-record` prints the same key (split in 255-byte strings for the zone file).
        let record = try CLI.run(["reports", "dkim-record", "--key", rsaKey, "--domain", "Sender.test"]).stdout
        #expect(record.hasPrefix("tlsrpt._domainkey.sender.test. IN TXT \"v=DKIM1; k=rsa; p="))
        #expect(record.replacingOccurrences(of: "\" \"", with: "").contains("p=\(der)\""), "\(record)")
        let ingest = try CLI.run(["reports", "ingest", "--dkim", "require", "--dns-server", dns.server, "--database", dir.appendingPathComponent("in.db").path, "--verbose"], stdin: message)
        #expect(ingest.stderr.contains("stored as #1") && ingest.stderr.contains("DKIM pass d=sender.test"), "\(ingest.stderr)")

        // Ed25519 (RFC 8463): a second sender database, the same day's mail signed with the Ed25519 key.
        let edDB = dir.appendingPathComponent("e.db").path
        let edDaemon = try CollectorDaemon(dir: dir, database: edDB, name: "e")
        try DatagramSender(path: edDaemon.socket).send(Datagrams.make(domain: "mail.test", record: "v=TLSRPTv1; rua=mailto:tlsrpt@mail.test", code: 202))
        Thread.sleep(forTimeInterval: 1.5)
        edDaemon.stop()
        let edCfg = try config(edKey)
        let edSend = try CLI.run(["reports", "send", "--day", today(), "--config", edCfg, "--database", edDB, "--json"])
        #expect(edSend.status == 0, "\(edSend.stdout) \(edSend.stderr)")
        let edMail = try FileManager.default.contentsOfDirectory(at: sink, includingPropertiesForKeys: nil).filter { $0.pathExtension == "eml" && $0 != mails[0] }
        #expect(edMail.count == 1)
        let edMessage = try Data(contentsOf: edMail[0])
        #expect(String(decoding: edMessage, as: UTF8.self).hasPrefix("DKIM-Signature: v=1; a=ed25519-sha256;"))
        try verifyWithDKIMPy(edMessage, keyPath: edKey)
        let edRaw = try CLI.run(["-c", "openssl pkey -in \(edKey) -pubout -outform DER | tail -c 32 | base64 -w0"], executable: URL(fileURLWithPath: "/bin/sh")).stdout
        let edDNS = try DNSMasq(lines: ["txt-record=tlsrpt._domainkey.sender.test,\"v=DKIM1; k=ed25519; p=\(edRaw)\""])
        let edIngest = try CLI.run(["reports", "ingest", "--dkim", "require", "--dns-server", edDNS.server, "--database", dir.appendingPathComponent("in2.db").path, "--verbose"], stdin: edMessage)
        #expect(edIngest.stderr.contains("DKIM pass d=sender.test"), "\(edIngest.stderr)")
        // Tampered: dkimpy and we both refuse it.
        let tampered = Data(text.replacingOccurrences(of: "TLS-Report-Domain: mail.test", with: "TLS-Report-Domain: evil.test").utf8)
        #expect(throws: (any Error).self) { try verifyWithDKIMPy(tampered, keyPath: rsaKey) }
    }

    /// A test CA (its PEM file) and a certificate and key for "localhost" (PEM files).
    /// A test CA (written to a file for the daemon's ca_files) and a certificate for localhost.
    /// Also written as files (certificate, key) for `mtasts serve`'s tls: section.
    func localhostCertificate() throws -> (ca: String, leaf: TestCA.Leaf, certificate: String, key: String) {
        let ca = try TestCA()
        let leaf = try ca.issue(dnsNames: ["localhost"])
        let cert = dir.appendingPathComponent("localhost.crt").path, key = dir.appendingPathComponent("localhost.key").path
        try leaf.certificatePEM.write(toFile: cert, atomically: true, encoding: .utf8)
        try leaf.keyPEM.write(toFile: key, atomically: true, encoding: .utf8)
        return (try ca.writePEM(to: dir), leaf, cert, key)
    }

    /// dkimpy (PyPI), an independent verifier; the public key comes from the PEM file.
    func verifyWithDKIMPy(_ message: Data, keyPath: String) throws {
        try DKIMPy.check()
        let python = DKIMPy.python
        let path = dir.appendingPathComponent("verify-\(UUID().uuidString.prefix(6)).eml").path
        try message.write(to: URL(fileURLWithPath: path))
        let out = try CLI.run(["-c", """
            import dkim, sys, subprocess, base64
            key = sys.argv[2]
            der = subprocess.run(['openssl', 'pkey', '-in', key, '-pubout', '-outform', 'DER'], capture_output=True).stdout
            kind = subprocess.run(['openssl', 'pkey', '-in', key, '-noout', '-text'], capture_output=True, text=True).stdout
            if 'ED25519' in kind.upper():
                record = b'v=DKIM1; k=ed25519; p=' + base64.b64encode(der[-32:])
            else:
                record = b'v=DKIM1; k=rsa; p=' + base64.b64encode(der)
            def dnsfunc(name, timeout=5):
                assert name == b'tlsrpt._domainkey.sender.test.', name
                return record
            ok = dkim.verify(open(sys.argv[1], 'rb').read(), dnsfunc=dnsfunc)
            print('pass' if ok else 'fail')
            sys.exit(0 if ok else 1)
            """, path, keyPath], executable: URL(fileURLWithPath: python))
        if out.status != 0 { throw PostgresServer.Missing(description: "dkimpy: \(out.stdout) \(out.stderr)") }
    }

    @Test func submissionWithSTARTTLS() throws {
        let ca = try TestCA()
        let caFile = try ca.writePEM(to: dir)
        let mailLog = MailLog()
        let port = TestServer.freePort()
        let mx = try TestServer.mx(address: "127.0.0.1", port: port, hostname: "localhost", leaf: try ca.issue(dnsNames: ["localhost"]), behaviour: .starttls,
                                   mail: mailLog, auth: ("tlsrpt", "s3cret"))
        _ = mx
        let db = dir.appendingPathComponent("s.db").path
        let daemon = try CollectorDaemon(dir: dir, database: db, name: "s")
        try DatagramSender(path: daemon.socket).send(Datagrams.make(domain: "smtp.test", record: "v=TLSRPTv1; rua=mailto:tlsrpt@smtp.test"))
        Thread.sleep(forTimeInterval: 1.5)
        daemon.stop()
        let cfg = dir.appendingPathComponent("smtp.yml").path
        try """
            tlsrpt_database: \(db)
            reporting:
              organization: Test Sender
              submitter: sender.test
              ca_file: \(caFile)
              mail:
                transport: smtp
                host: localhost
                port: \(port)
                tls: starttls
                username: tlsrpt
                password: s3cret

            """.write(toFile: cfg, atomically: true, encoding: .utf8)
        let send = try CLI.run(["reports", "send", "--day", today(), "--config", cfg, "--json"])
        #expect(send.status == 0, "\(send.stdout) \(send.stderr)")
        #expect((send.json as? [[String: Any]])?.first?["status"] as? String == "sent", "\(send.stdout)")
        let got = mailLog.messages
        #expect(got.count == 1)
        #expect(got.first?.tls == true)
        #expect(got.first?.user == "tlsrpt")
        #expect(got.first?.data.contains("TLS-Report-Domain: smtp.test") == true)
    }

    @Test func twoCollectorsOnePostgresOneReport() throws {
        let pg = try PostgresServer()
        defer { pg.stop() }
        let (caFile, leaf, _, _) = try localhostCertificate()
        let endpoint = try ReportEndpoint(dir: dir.appendingPathComponent("pg"), leaf: leaf, statuses: [201])
        let record = "v=TLSRPTv1; rua=https://localhost:\(endpoint.port)/r"
        let one = try CollectorDaemon(dir: dir, database: pg.dsn, name: "one")
        let two = try CollectorDaemon(dir: dir, database: pg.dsn, name: "two")
        for _ in 0..<30 { try DatagramSender(path: one.socket).send(Datagrams.make(domain: "fleet.test", record: record)) }
        for _ in 0..<20 { try DatagramSender(path: two.socket).send(Datagrams.make(domain: "fleet.test", record: record, code: 201)) }
        Thread.sleep(forTimeInterval: 1.5)
        one.stop()
        two.stop()
        // Two nodes send at the same time: one report, delivered once, from both nodes' data.
        var configs: [String] = []
        for node in ["one", "two"] {
            let path = dir.appendingPathComponent("fleet-\(node).yml").path
            try "tlsrpt_database: \"\(pg.dsn)\"\nreporting:\n  organization: Fleet\n  submitter: sender.test\n  node: \(node)\n  ca_file: \(caFile)\n  allow_private_rua: true\n".write(toFile: path, atomically: true, encoding: .utf8)
            configs.append(path)
        }
        final class Outputs: @unchecked Sendable {
            let lock = NSLock()
            var items = [CLI.Output?](repeating: nil, count: 2)
        }
        let box = Outputs()
        let group = DispatchGroup()
        for (i, cfg) in configs.enumerated() {
            DispatchQueue.global().async(group: group) {
                let out = try? CLI.run(["reports", "send", "--day", today(), "--config", cfg, "--json"])
                box.lock.withLock { box.items[i] = out }
            }
        }
        group.wait()
        let outputs = box.items
        let sent = outputs.compactMap { $0?.json as? [[String: Any]] }.flatMap { $0 }.filter { $0["status"] as? String == "sent" }
        #expect(sent.count == 1, "\(outputs.map { $0?.stdout ?? "" })")
        #expect(endpoint.bodies.count == 1)
        let report = try gunzip(endpoint.bodies[0])
        let summary = (report["policies"] as? [[String: Any]])?.first?["summary"] as? [String: Int]
        #expect(summary == ["total-successful-session-count": 30, "total-failure-session-count": 20])
    }

    /// Fault injection: PostgreSQL killed (immediate stop) while the collector is taking datagrams,
    /// then started again. Commits fail meanwhile; the batch is kept and retried whole (a statement
    /// is never retried outside its transaction), so every datagram taken is counted exactly once.
    @Test("PostgreSQL killed during collection and restarted: every datagram taken is in the totals, none twice")
    func postgresKilledDuringCollection() throws {
        let pg = try PostgresServer()
        defer { pg.stop() }
        let daemon = try CollectorDaemon(dir: dir, database: pg.dsn, extra: "", name: "pgkill")
        let sender = DatagramSender(path: daemon.socket)
        let record = "v=TLSRPTv1; rua=mailto:r@kill.test"
        for _ in 0..<200 { try sender.send(Datagrams.make(domain: "kill.test", record: record)) }
        Thread.sleep(forTimeInterval: 2)
        pg.stop()
        for i in 0..<300 { try sender.send(Datagrams.make(domain: "kill.test", record: record, code: 201 + i % 3)) }
        Thread.sleep(forTimeInterval: 3)
        try pg.start()
        for _ in 0..<100 { try sender.send(Datagrams.make(domain: "kill.test", record: record)) }
        Thread.sleep(forTimeInterval: 4)
        daemon.stop()
        let status = try CLI.run(["reports", "status", "--json", "--database", pg.dsn])
        let days = (status.json as? [String: Any])?["days"] as? [[String: Any]] ?? []
        #expect(days.count == 1, "\(status.stdout) \(status.stderr)")
        #expect(days.first?["successful"] as? Int == 300, "\(status.stdout)")
        #expect(days.first?["failed"] as? Int == 300, "\(status.stdout)")
        let log = (try? String(contentsOfFile: daemon.log, encoding: .utf8)) ?? ""
        #expect(log.contains("failed, kept for the next try"), "the outage was not seen: \(log.suffix(2_000))")
    }

    /// Fault injection: the SQLite database on a file system that fills up (a 1 MB tmpfs). Commits
    /// fail with an error and are retried; once there is room again (remounted larger), every
    /// datagram taken is counted: no crash, no lost batch.
    @Test("SQLite on a full file system: an error and a retry, not a crash and not a lost batch")
    func sqliteOnAFullFileSystem() throws {
        let mount = "/tmp/mtasts-full-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        try PostgresServer.sh("mount -t tmpfs -o size=1m tmpfs \(mount)")
        defer { try? PostgresServer.sh("umount \(mount)") }
        let database = "\(mount)/tlsrpt.db"
        let daemon = try CollectorDaemon(dir: dir, database: database, extra: "", name: "full")
        let sender = DatagramSender(path: daemon.socket)
        let record = "v=TLSRPTv1; rua=mailto:r@full.test"
        // Distinct failure details (a different 'a' each) make distinct rows: about 2 MB of them.
        let padding = String(repeating: "x", count: 600)
        for i in 0..<3_000 {
            try sender.send(Datagrams.make(domain: "full.test", record: record, code: 201, additional: Array("\(i)-\(padding)".utf8)))
        }
        Thread.sleep(forTimeInterval: 4)
        let duringLog = (try? String(contentsOfFile: daemon.log, encoding: .utf8)) ?? ""
        #expect(duringLog.contains("kept for the next try"), "the full disk was not seen: \(duringLog.suffix(1_500))")
        #expect(!daemon.process.hasExited, "the daemon stopped on a full disk")
        try PostgresServer.sh("mount -o remount,size=64m \(mount)")
        Thread.sleep(forTimeInterval: 4)
        daemon.stop()
        let status = try CLI.run(["reports", "status", "--json", "--database", database])
        let days = (status.json as? [String: Any])?["days"] as? [[String: Any]] ?? []
        #expect(days.first?["failed"] as? Int == 3_000, "\(status.stdout) \(status.stderr)")
    }

    /// The daily run inside `mtasts daemon` (send_daily, spread 0): yesterday's results — read
    /// from a Postfix log of yesterday by collect-log — are built and delivered once, at start.
    @Test func dailyRunInsideTheDaemon() throws {
        let (caFile, leaf, _, _) = try localhostCertificate()
        let endpoint = try ReportEndpoint(dir: dir.appendingPathComponent("daily"), leaf: leaf, statuses: [201])
        let dns = try DNSMasq(lines: ["txt-record=_smtp._tls.y.test,\"v=TLSRPTv1; rua=https://localhost:\(endpoint.port)/r\""])
        let yesterday = String(ISO8601DateFormatter().string(from: Date().addingTimeInterval(-86_400)).prefix(10))
        let log = dir.appendingPathComponent("mail.log").path
        try """
            \(yesterday)T10:00:00.000000+00:00 mx1 postfix/smtp[101]: Verified TLS connection established to mx.y.test[192.0.2.7]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
            \(yesterday)T10:00:00.200000+00:00 mx1 postfix/smtp[101]: 4F1A2B3C4D: to=<a@y.test>, relay=mx.y.test[192.0.2.7]:25, delay=0.2, delays=0/0/0.1/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)
            \(yesterday)T10:00:00.300000+00:00 mx1 postfix/smtp[101]: 4F1A2B3C4D: to=<b@y.test>, relay=mx.y.test[192.0.2.7]:25, delay=0.3, delays=0/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)
            \(yesterday)T11:00:00.000000+00:00 mx1 postfix/smtp[102]: 5A6B7C8D9E: to=<c@y.test>, relay=mx.y.test[192.0.2.7]:25, delay=0.1, delays=0/0/0.1/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)
            \(yesterday)T12:00:00.000000+00:00 mx1 postfix/smtp[103]: connect to mx.z.test[192.0.2.8]:25: Connection refused
            \(yesterday)T12:00:00.100000+00:00 mx1 postfix/smtp[103]: 6B7C8D9E0F: to=<d@z.test>, relay=none, delay=0.1, delays=0/0/0.1/0, dsn=4.4.1, status=deferred (connect to mx.z.test[192.0.2.8]:25: Connection refused)

            """.write(toFile: log, atomically: true, encoding: .utf8)
        let db = dir.appendingPathComponent("daily.db").path
        let config = dir.appendingPathComponent("daily.yml").path
        try """
            host: 127.0.0.1
            port: \(TestServer.freePort())
            cache:
              type: internal
            dns_server: \(dns.server)
            tlsrpt_database: \(db)
            reporting:
              organization: Daily
              submitter: sender.test
              spread: 0
              ca_file: \(caFile)
              allow_private_rua: true

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let collected = try CLI.run(["collect-log", log, "--config", config, "--json"])
        let counts = collected.json as? [String: Any]
        // Two sessions (the second recipient of 4F1A2B3C4D rode the same one); the refused connection is no TLS session.
        #expect(counts?["delivery-attempts"] as? Int == 2 && counts?["stored"] as? Int == 2, "\(collected.stdout) \(collected.stderr)")
        let daemonLog = dir.appendingPathComponent("daily.log").path
        let daemon = try CollectorDaemon.spawn(config: config, log: daemonLog)
        let deadline = Date().addingTimeInterval(20)
        while endpoint.bodies.isEmpty && Date() < deadline { Thread.sleep(forTimeInterval: 0.2) }
        #expect(endpoint.bodies.count == 1, "\((try? String(contentsOfFile: daemonLog, encoding: .utf8)) ?? "")")
        if let body = endpoint.bodies.first {
            let report = try gunzip(body)
            let range = report["date-range"] as? [String: String]
            #expect(range?["start-datetime"] == "\(yesterday)T00:00:00Z")
            let p = (report["policies"] as? [[String: Any]])?.first
            #expect((p?["policy"] as? [String: Any])?["policy-type"] as? String == "no-policy-found")
            #expect((p?["summary"] as? [String: Int])?["total-successful-session-count"] == 2)
        }
        if let child = daemon.childPID { kill(child, SIGTERM) }
        let stopBy = Date().addingTimeInterval(20)
        while !daemon.hasExited && Date() < stopBy { Thread.sleep(forTimeInterval: 0.05) }
        let ledger = (try CLI.run(["reports", "status", "--json", "--database", db]).json as? [String: Any])?["deliveries"] as? [[String: Any]]
        #expect(ledger?.count == 1 && ledger?.first?["status"] as? String == "sent")
    }

    /// collect-log --follow: lines appended later are taken, and so are those of a new file
    /// after the log was rotated (moved away and created again).
    @Test func collectLogFollowsAppendsAndRotation() throws {
        let dns = try DNSMasq(lines: ["txt-record=_smtp._tls.f.test,\"v=TLSRPTv1; rua=mailto:r@f.test\""])
        let db = dir.appendingPathComponent("follow.db").path
        let config = dir.appendingPathComponent("follow.yml").path
        try "cache:\n  type: internal\ndns_server: \(dns.server)\ntlsrpt_database: \(db)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let log = dir.appendingPathComponent("follow.log").path
        func lines(_ n: Int, pid: Int) -> String {
            (0..<n).map { i in
                "2026-11-29T10:00:0\(i).000000+00:00 mx postfix/smtp[\(pid)]: Q\(pid)X\(i): to=<u@f.test>, relay=mx.f.test[192.0.2.1]:25, delay=0.1, dsn=2.0.0, status=sent (250 ok)\n"
            }.joined()
        }
        try lines(2, pid: 1).write(toFile: log, atomically: true, encoding: .utf8)
        let followerErrors = dir.appendingPathComponent("follow.stderr").path
        let follower = try Spawned(CLI.binary.path, ["collect-log", log, "--follow", "--config", config], stderrPath: followerErrors)
        defer { follower.stop() }
        // What the follower said, shown when an expectation fails (an early exit says why here).
        func said() -> Comment { Comment(rawValue: "collect-log said: " + ((try? String(contentsOfFile: followerErrors, encoding: .utf8)) ?? "")) }
        func stored() throws -> Int {
            let days = (try CLI.run(["reports", "status", "--json", "--database", db]).json as? [String: Any])?["days"] as? [[String: Any]]
            return days?.first?["successful"] as? Int ?? 0
        }
        func waitFor(_ n: Int) throws -> Int {
            let deadline = Date().addingTimeInterval(15)
            var now = try stored()
            while now < n && Date() < deadline {
                Thread.sleep(forTimeInterval: 0.2)
                now = try stored()
            }
            return now
        }
        #expect(try waitFor(2) == 2, said())
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(lines(3, pid: 2).utf8))
        try handle.close()
        #expect(try waitFor(5) == 5, said())
        // Rotation: the old file moves away, a new one takes the name.
        try FileManager.default.moveItem(atPath: log, toPath: log + ".1")
        try lines(4, pid: 3).write(toFile: log, atomically: false, encoding: .utf8)
        #expect(try waitFor(9) == 9, said())
        // The database locked past the follower's 5-s busy time-out (another process holding an
        // exclusive transaction for 7 s): the error is said, the lines are kept and stored after.
        let lockedFile = dir.appendingPathComponent("follow.locked").path
        let locker = try Spawned("/usr/bin/python3", ["-c", """
            import sqlite3, sys, time
            c = sqlite3.connect(sys.argv[1], isolation_level=None)
            c.execute("BEGIN EXCLUSIVE")
            open(sys.argv[2], "w").close()
            time.sleep(7)
            c.execute("COMMIT")
            """, db, lockedFile])
        defer { locker.stop() }
        let lockBy = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: lockedFile) && Date() < lockBy { Thread.sleep(forTimeInterval: 0.05) }
        #expect(FileManager.default.fileExists(atPath: lockedFile))
        let more = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try more.seekToEnd()
        try more.write(contentsOf: Data(lines(2, pid: 4).utf8))
        try more.close()
        let saidBy = Date().addingTimeInterval(12)
        while !said().rawValue.contains("retried") && Date() < saidBy { Thread.sleep(forTimeInterval: 0.2) }
        #expect(said().rawValue.contains("database is locked") && said().rawValue.contains("retried"), said())
        #expect(try waitFor(11) == 11, said())
        #expect(!follower.hasExited, said())
    }
}
