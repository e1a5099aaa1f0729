import Foundation
import Testing
import TestSupport

/// The zone of socketmap-cases.md on loopback: dnsmasq, one HTTPS policy host per domain
/// (127.0.3.N, one port) with certificates from a CA made here.
final class SocketmapWorld: @unchecked Sendable {
    let ca: TestCA
    let dir: URL
    let caFile: String
    let policyPort = TestServer.freePort()
    var dns: DNSMasq!
    var servers: [TestServer] = []
    /// Postfix's configuration directory for postmap.
    let postfixDir: URL

    init() throws {
        ca = try TestCA()
        let other = try TestCA(commonName: "Untrusted CA")
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("mtasts-sm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        caFile = try ca.writePEM(to: dir)
        postfixDir = dir.appendingPathComponent("postfix")
        try FileManager.default.createDirectory(at: postfixDir, withIntermediateDirectories: true)
        try "compatibility_level = 3.6\nmyhostname = localhost.localdomain\nmydomain = localdomain\n"
            .write(to: postfixDir.appendingPathComponent("main.cf"), atomically: true, encoding: .utf8)

        var zone = ["log-queries"]
        var n = 10
        func host(_ d: String, _ behaviour: PolicyBehaviour, leaf: TestCA.Leaf? = nil, record: String? = "v=STSv1; id=20180907T090909;") throws {
            n += 1
            let address = "127.0.3.\(n)"
            zone.append("host-record=mta-sts.\(d),\(address)")
            if let record { zone.append("txt-record=_mta-sts.\(d),\"\(record)\"") }
            servers.append(try TestServer.policyHost(address: address, port: policyPort, leaf: leaf ?? ca.issue(dnsNames: ["mta-sts.\(d)"]), behaviour: behaviour))
        }
        func text(_ body: String, type: String = "text/plain", status: Int = 200) -> PolicyBehaviour {
            .respond(status: status, contentType: type, body: body)
        }
        try host("good.test", text("version: STSv1\nmode: enforce\nmx: mail.good.test\nmax_age: 86400\n"))
        try host("testing.test", text("version: STSv1\nmode: testing\nmx: mail.testing.test\nmax_age: 86400\n"))
        try host("valid-none.test", text("version: STSv1\nmode: none\nmax_age: 86400\n"))
        try host("wild.test", text("version: STSv1\nmode: enforce\nmx: mail.wild.test\nmx: *.mx.wild.test\nmax_age: 604800\n"))
        // Its MX hosts: one the wildcard covers, one two labels below it (RFC 8461 §4.1: not covered).
        zone += ["mx-host=wild.test,mail.wild.test,10", "mx-host=wild.test,a.mx.wild.test,20", "mx-host=wild.test,b.c.mx.wild.test,30"]
        // No record; NODATA (the name exists, without TXT); three malformed records.
        zone.append("host-record=_mta-sts.no-data.test,127.0.0.1")
        try host("bad-record1.test", text("version: STSv1\nmode: enforce\nmx: mail.bad-record1.test\nmax_age: 86400\n"), record: "id=20180907T090909; v=STSv1;")
        try host("bad-record2.test", text("version: STSv1\nmode: enforce\nmx: mail.bad-record2.test\nmax_age: 86400\n"), record: "azazaza;asdasdasdasd")
        try host("bad-record3.test", text("version: STSv1\nmode: enforce\nmx: mail.bad-record3.test\nmax_age: 86400\n"), record: "v=STSv12; id=20180907T090909;")
        // Bad policies.
        try host("bad-policy1.test", text("garbage"))
        try host("bad-policy2.test", text("version: STSv1\nmode: enforce\nmax_age: 86400\n"))
        try host("bad-policy3.test", text("version: STSv1\nmode: enforce\nmx: mail.bad-policy3.test\nmax_age: 86400\n", type: "text/html"))
        try host("bad-policy4.test", text("version: STSv1\nmode: enforce\nmx: mail.bad-policy4.test\nmax_age: 86400\n", status: 404))
        try host("bad-policy5.test", text("version: STSv1\nmode: enforce\nmx: mail.bad-policy5.test\nmax_age: xxx\n"))
        try host("bad-policy6.test", text("version: STSv1\nmode: enforce\nmx: mail.bad-policy6.test\nmax_age: 31557601\n"))
        try host("bad-policy7.test", text("version: STSv1\nmx: mail.bad-policy7.test\nmax_age: 86400\n"))
        try host("bad-policy8.test", text("version: STSv1\nmode: doubt\nmx: mail.bad-policy8.test\nmax_age: 86400\n"))
        try host("static-overlength.test", .large(size: 131_193, announceLength: true))
        try host("chunked-overlength.test", .large(size: 100 * 1024, announceLength: false))
        try host("bad-cert1.test", text("version: STSv1\nmode: enforce\nmx: mail.bad-cert1.test\nmax_age: 86400\n"), leaf: other.issue(dnsNames: ["mta-sts.bad-cert1.test"]))
        try host("bad-cert2.test", text("version: STSv1\nmode: enforce\nmx: mail.bad-cert2.test\nmax_age: 86400\n"), leaf: ca.issue(dnsNames: ["bad-cert2.test"]))
        // For check/query agreement: a redirect, a charset parameter, a clientAuth-only
        // certificate, two records, a policy host whose other address is dead.
        try host("redirect.test", .respond(status: 301, contentType: "text/plain", body: "", extraHeaders: ["Location: https://mta-sts.good.test/.well-known/mta-sts.txt"]))
        try host("charset.test", text("version: STSv1\nmode: enforce\nmx: mail.charset.test\nmax_age: 86400\n", type: "text/plain; charset=utf-8"))
        try host("client-auth.test", text("version: STSv1\nmode: enforce\nmx: mail.client-auth.test\nmax_age: 86400\n"),
                 leaf: ca.issue(dnsNames: ["mta-sts.client-auth.test"], usages: [.clientAuth]))
        try host("two-records.test", text("version: STSv1\nmode: enforce\nmx: mail.two-records.test\nmax_age: 86400\n"))
        zone.append("txt-record=_mta-sts.two-records.test,\"v=STSv1; id=2;\"")
        try host("dead-address.test", text("version: STSv1\nmode: enforce\nmx: mail.dead-address.test\nmax_age: 86400\n"))
        zone.append("host-record=mta-sts.dead-address.test,127.0.3.250")
        // A policy host that takes about 22 s to send its policy (a byte every 350 ms).
        try host("slow.test", .trickle(body: "version: STSv1\nmode: enforce\nmx: mail.slow.test\nmax_age: 86400\n", interval: .milliseconds(350)))
        dns = try DNSMasq(lines: zone, failing: ["broken.example"])
    }

    func txtQueries(_ name: String) -> Int {
        dns.log.components(separatedBy: "\n").filter { $0.contains("query[TXT] \(name) ") }.count
    }
}

/// `mtasts daemon` started as Postfix would talk to it, with a configuration written here.
final class Daemon: @unchecked Sendable {
    let port: Int
    let configPath: String
    let stderrPath: String
    let process: Spawned
    let world: SocketmapWorld
    let unixPath: String?

    static let zones = """
        zones:
          strict:
            strict_testing: true
          tlsrpt:
            tlsrpt: true
          nosni:
            require_sni: false
          patterns:
            enforce_mx_patterns: true
        """

    init(_ world: SocketmapWorld, cache: String, dnsServer: String? = nil, unix: Bool = false, extra: String = "", zones: String = Daemon.zones) throws {
        self.world = world
        port = TestServer.freePort()
        let id = UUID().uuidString.prefix(8)
        configPath = world.dir.appendingPathComponent("daemon-\(id).yml").path
        stderrPath = world.dir.appendingPathComponent("daemon-\(id).log").path
        unixPath = unix ? world.dir.appendingPathComponent("sm-\(id).sock").path : nil
        var yaml = """
            host: 127.0.0.1
            port: \(port)
            shutdown_timeout: 5
            policy_failure_level: may
            \(cache)
            \(zones)
            dns_server: \(dnsServer ?? world.dns.server)
            dns_timeout: 2
            ca_file: \(world.caFile)
            system_roots: false
            policy_port: \(world.policyPort)
            \(extra)

            """
        if let unixPath { yaml += "path: \(unixPath)\nmode: 0660\n" }
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
        process = try Spawned(CLI.binary.path, ["daemon", "--config", configPath], stderrPath: stderrPath)
        let deadline = Date().addingTimeInterval(20)
        // Ready when it says so: every listener (TCP, unix socket with its mode) is set up by then.
        while !log.contains("socketmap on") || !Daemon.accepts(port) {
            if process.hasExited || Date() > deadline {
                throw PostgresServer.Missing(description: "the daemon did not start: \(log)")
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    var log: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// The daemon's own pid (the spawner runs it under a small shell).
    var pid: pid_t? { process.childPID }

    func signal(_ sig: Int32) { if let pid { kill(pid, sig) } }

    /// The files the daemon has mapped (its libraries).
    var maps: String {
        guard let pid, let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/maps") else { return "" }
        defer { try? handle.close() }
        return String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)  // (read to the end: a proc file has no size)
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }

    var table: String { "socketmap:inet:127.0.0.1:\(port)" }

    /// `postmap -q -` with the keys on standard input, over one connection: the keys found and
    /// their values (NOTFOUND keys are not printed).
    func postmap(_ keys: [String], name: String = "postfix", table: String? = nil) throws -> [String: String] {
        let out = try CLI.program("/usr/sbin/postmap", ["-c", world.postfixDir.path, "-q", "-", "\(table ?? self.table):\(name)"],
                                  stdin: Data((keys.joined(separator: "\n") + "\n").utf8))
        var found: [String: String] = [:]
        for line in out.stdout.split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            if parts.count == 2 { found[String(parts[0])] = String(parts[1]) }
        }
        return found
    }

    /// `postmap -q KEY`: status, value, and Postfix's complaint.
    func postmapOne(_ key: String, name: String = "postfix", table: String? = nil) throws -> CLI.Output {
        try CLI.program("/usr/sbin/postmap", ["-c", world.postfixDir.path, "-q", key, "\(table ?? self.table):\(name)"])
    }

    deinit { process.stop() }
}

/// A raw socketmap client: bytes out, bytes in.
struct RawClient {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw PostgresServer.Missing(description: "connect: \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ text: String) { _ = text.utf8CString.withUnsafeBufferPointer { Glibc.send(fd, $0.baseAddress, $0.count - 1, Int32(MSG_NOSIGNAL)) } }

    static func request(_ name: String, _ key: String) -> String {
        let payload = "\(name) \(key)"
        return "\(payload.utf8.count):\(payload),"
    }

    /// Reads until `count` netstrings arrived or the peer closed; returns the payloads and whether it closed.
    func replies(_ count: Int) -> (payloads: [String], closed: Bool) {
        var data: [UInt8] = []
        var out: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while out.count < count {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return (out, true) }
            data += buffer[0..<n]
            while let colon = data.firstIndex(of: UInt8(ascii: ":")), let len = Int(String(decoding: data[..<colon], as: UTF8.self)), data.count >= colon + 2 + len {
                out.append(String(decoding: data[(colon + 1)..<(colon + 1 + len)], as: UTF8.self))
                data.removeFirst(colon + 2 + len)
            }
        }
        return (out, false)
    }

    /// True when the peer closed the connection within the receive time-out: an orderly close
    /// (recv returns 0) or a reset (a close with our request unread), not a time-out.
    func isClosed() -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, 0)
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }

    func close() { Glibc.close(fd) }
}

@Suite(.serialized) struct DaemonTests {
    static let world = Result { try SocketmapWorld() }

    /// Every case of socketmap-cases.md, through Postfix's own postmap.
    @Test func socketmapCases() throws {
        let world = try DaemonTests.world.get()
        let daemon = try Daemon(world, cache: "cache:\n  type: internal")
        // postmap prints the value after the status word: "OK secure …" shows as "secure …".
        let ok = "secure match=mail.good.test servername=hostname"
        let keys = ["good.test", "[good.test]:123", "good.test:123", "good.test.", ".good.test", "[1.2.3.4]", "[a:bb:ccc::dddd]:123",
                    "testing.test", "valid-none.test", "no-record.test", "no-data.test", "bad-record1.test", "bad-record2.test", "bad-record3.test",
                    "bad-policy1.test", "bad-policy2.test", "bad-policy3.test", "bad-policy4.test", "bad-policy5.test", "bad-policy6.test",
                    "bad-policy7.test", "bad-policy8.test", "static-overlength.test", "chunked-overlength.test", "bad-cert1.test", "bad-cert2.test",
                    "wild.test"]
        let found = try daemon.postmap(keys)
        // bad-policy6 (max_age 31557601): capped to 31557600 and applied, where the reference
        // daemon drops the policy (our documented decision, DESIGN.md "max_age … capped").
        #expect(found == [
            "good.test": ok, "[good.test]:123": ok, "good.test:123": ok, "good.test.": ok,
            "bad-policy6.test": "secure match=mail.bad-policy6.test servername=hostname",
            "wild.test": "secure match=a.mx.wild.test:mail.wild.test servername=hostname",
        ], "\(daemon.log)")
        // strict_testing; require_sni: false.
        #expect(try daemon.postmap(["testing.test", "valid-none.test"], name: "strict") == ["testing.test": "secure match=mail.testing.test servername=hostname"])
        #expect(try daemon.postmap(["good.test"], name: "nosni") == ["good.test": "secure match=mail.good.test"])
        // TLSRPT attributes (Postfix ≥ 3.10), and the failure of a policy that could not be used.
        let tlsrpt = try daemon.postmap(["wild.test", "bad-cert1.test", "bad-policy1.test", "bad-policy4.test", "no-record.test"], name: "tlsrpt")
        #expect(tlsrpt["wild.test"] == "secure match=a.mx.wild.test:mail.wild.test servername=hostname policy_type=sts policy_domain=wild.test mx_host_pattern=mail.wild.test mx_host_pattern=*.mx.wild.test { policy_string = version: STSv1 } { policy_string = mode: enforce } { policy_string = mx: mail.wild.test } { policy_string = mx: *.mx.wild.test } { policy_string = max_age: 604800 }")
        #expect(tlsrpt["bad-cert1.test"] == "may policy_type=sts policy_domain=bad-cert1.test policy_failure=sts-webpki-invalid")
        #expect(tlsrpt["bad-policy1.test"] == "may policy_type=sts policy_domain=bad-policy1.test policy_failure=sts-policy-invalid")
        #expect(tlsrpt["bad-policy4.test"] == "may policy_type=sts policy_domain=bad-policy4.test policy_failure=sts-policy-fetch-error")
        #expect(tlsrpt["no-record.test"] == nil)
        // A zone whose Postfix (≥ 3.10.5) enforces mx_host_pattern=: the pattern itself, with the
        // attributes that carry it, even without tlsrpt (the reference daemon's reply, enforced).
        #expect(try daemon.postmap(["wild.test"], name: "patterns")["wild.test"]?
            .hasPrefix("secure match=.mx.wild.test:mail.wild.test servername=hostname policy_type=sts policy_domain=wild.test mx_host_pattern=mail.wild.test mx_host_pattern=*.mx.wild.test ") == true)
        // SERVFAIL with nothing cached: no policy (NOTFOUND), as the reference daemon answers;
        // the mail goes out at Postfix's own level instead of waiting until it bounces.
        let failed = try daemon.postmapOne("x.broken.example")
        #expect(failed.status != 0 && !failed.stderr.contains("temporary error") && failed.stdout.isEmpty, "\(failed.status) \(failed.stderr)")
        // Negative caching: no-record.test was asked 3 times, its TXT once.
        _ = try daemon.postmap(["no-record.test", "no-record.test"])
        #expect(world.txtQueries("_mta-sts.no-record.test") == 1, "\(world.dns.log)")
    }

    /// The unix-socket form, with its mode.
    @Test func unixSocket() throws {
        let world = try DaemonTests.world.get()
        let daemon = try Daemon(world, cache: "cache:\n  type: internal", unix: true)
        let path = try #require(daemon.unixPath)
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o660)
        let out = try daemon.postmapOne("good.test", table: "socketmap:unix:\(path)")
        #expect(out.stdout == "secure match=mail.good.test servername=hostname\n", "\(out.stderr)")
        #expect(try daemon.postmap(["good.test"]) == ["good.test": "secure match=mail.good.test servername=hostname"])
    }

    /// Malformed and oversized requests, pipelining, a client that leaves mid-request, and
    /// 1,000 connections at once.
    @Test func protocolRobustness() throws {
        let world = try DaemonTests.world.get()
        let daemon = try Daemon(world, cache: "cache:\n  type: internal", extra: "limits:\n  max_request_length: 1000")
        // Pipelined: a malformed request between two good ones; replies in order; the connection stays.
        let c = try RawClient(port: daemon.port)
        c.send(RawClient.request("postfix", "good.test") + "5:hello," + RawClient.request("postfix", "[1.2.3.4]") + RawClient.request("postfix", "wild.test"))
        let r = c.replies(4)
        #expect(!r.closed)
        #expect(r.payloads.count == 4)
        #expect(r.payloads.first == "OK secure match=mail.good.test servername=hostname")
        #expect(r.payloads.dropFirst().first?.hasPrefix("PERM malformed request") == true, "\(r.payloads)")
        #expect(r.payloads.dropFirst(2).first == "NOTFOUND ")
        #expect(r.payloads.last == "OK secure match=a.mx.wild.test:mail.wild.test servername=hostname")
        c.send(RawClient.request("postfix", "good.test"))
        #expect(c.replies(1).payloads == ["OK secure match=mail.good.test servername=hostname"])
        c.close()
        // Broken framing: PERM, then the connection is closed (the next request cannot be found).
        for bad in ["abc,", "3:aaa_", "99999:", ":,"] {
            let b = try RawClient(port: daemon.port)
            b.send(bad)
            let reply = b.replies(1)
            #expect(reply.payloads.first?.hasPrefix("PERM malformed netstring") == true, "\(bad): \(reply)")
            #expect(reply.closed || b.isClosed(), "\(bad)")
            b.close()
        }
        // A client that disconnects mid-request, and one that sends nothing.
        let gone = try RawClient(port: daemon.port)
        gone.send("30:postfix goo")
        gone.close()
        let silent = try RawClient(port: daemon.port)
        // Meanwhile others are served.
        #expect(try daemon.postmap(["good.test"]) == ["good.test": "secure match=mail.good.test servername=hostname"])
        silent.close()
        // 1,000 connections at once, each with a request; every one answered.
        var clients: [RawClient] = []
        for _ in 0..<1_000 { clients.append(try RawClient(port: daemon.port)) }
        for (i, client) in clients.enumerated() { client.send(RawClient.request("postfix", i % 2 == 0 ? "good.test" : "no-record.test")) }
        var answered = 0
        for (i, client) in clients.enumerated() {
            let reply = client.replies(1).payloads.first
            if reply == (i % 2 == 0 ? "OK secure match=mail.good.test servername=hostname" : "NOTFOUND ") { answered += 1 }
            client.close()
        }
        #expect(answered == 1_000)
        #expect(!daemon.process.hasExited)
    }

    /// The connection limit: over it a connection is closed at once; others go on; an idle
    /// connection is closed after the idle time-out.
    @Test func connectionLimitAndIdleTimeout() throws {
        let world = try DaemonTests.world.get()
        let daemon = try Daemon(world, cache: "cache:\n  type: internal", extra: "limits:\n  max_connections: 2\n  idle_timeout: 1")
        // The start-up probe's connection must be gone from the count first.
        Thread.sleep(forTimeInterval: 0.3)
        let a = try RawClient(port: daemon.port), b = try RawClient(port: daemon.port)
        a.send(RawClient.request("postfix", "[1.2.3.4]"))
        b.send(RawClient.request("postfix", "[1.2.3.4]"))
        #expect(a.replies(1).payloads == ["NOTFOUND "] && b.replies(1).payloads == ["NOTFOUND "])
        let over = try RawClient(port: daemon.port)
        over.send(RawClient.request("postfix", "[1.2.3.4]"))
        #expect(over.isClosed())
        over.close()
        // Idle for longer than idle_timeout: closed by the daemon, which frees the slots.
        #expect(a.isClosed() && b.isClosed())
        a.close()
        b.close()
        let c = try RawClient(port: daemon.port)
        c.send(RawClient.request("postfix", "[1.2.3.4]"))
        #expect(c.replies(1).payloads == ["NOTFOUND "])
        c.close()
    }

    /// A restarted daemon answers from its SQLite cache at once, even with DNS gone; SIGTERM
    /// stops it cleanly.
    @Test func restartWithWarmSQLite() throws {
        let world = try DaemonTests.world.get()
        let db = world.dir.appendingPathComponent("warm-\(UUID().uuidString.prefix(6)).db").path
        let cache = "cache:\n  type: sqlite\n  options:\n    filename: \(db)"
        let first = try Daemon(world, cache: cache)
        #expect(try first.postmap(["good.test", "wild.test"]).count == 2)
        first.signal(SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while !first.process.hasExited && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(first.process.hasExited)
        #expect(first.log.contains("stopped"), "\(first.log)")
        // DNS now points nowhere: only the cache can answer.
        let second = try Daemon(world, cache: cache, dnsServer: "127.0.0.1:9")
        #expect(second.log.contains("2 valid entries loaded"), "\(second.log)")
        // libpq (and what it needs: Kerberos, LDAP, GnuTLS…) is opened only for PostgreSQL.
        #expect(second.maps.contains("libsqlite3") && !second.maps.contains("libpq"))
        #expect(try second.postmap(["good.test", "wild.test"]) == [
            "good.test": "secure match=mail.good.test servername=hostname",
            "wild.test": "secure match=a.mx.wild.test:mail.wild.test servername=hostname",
        ])
    }

    /// Two daemons (two MTAs) share one PostgreSQL cache: what one fetched the other serves; when
    /// the database goes away and DNS fails too, a miss is TEMP (a stored policy might be the
    /// answer), not "no policy".
    @Test func sharedPostgresCache() throws {
        let world = try DaemonTests.world.get()
        let pg = try PostgresServer()
        let cache = "cache:\n  type: postgres\n  options:\n    dsn: \"\(pg.dsn)\"\n    timeout: 2"
        let a = try Daemon(world, cache: cache)
        #expect(try a.postmap(["good.test"]) == ["good.test": "secure match=mail.good.test servername=hostname"])
        #expect(a.maps.contains("libpq.so.5"))
        let b = try Daemon(world, cache: cache, dnsServer: "127.0.0.1:9")
        #expect(try b.postmap(["good.test"]) == ["good.test": "secure match=mail.good.test servername=hostname"], "\(b.log)")
        pg.stop()
        let temp = try b.postmapOne("wild.test")
        #expect(temp.stderr.contains("temporary error") && temp.stderr.contains("policy cache"), "\(temp.stderr)")
        // Its hot layer still answers what it has.
        #expect(try b.postmap(["good.test"]).count == 1)
    }

    /// Issue 13 #3: PostgreSQL stopped, then frozen with SIGSTOP. Misses resolve live (a domain
    /// without MTA-STS is NOTFOUND, a fetchable policy is enforced), a daemon started during the
    /// outage serves, 100 concurrent look-ups are answered within the budget, and after recovery
    /// the store is written without a restart.
    @Test func postgresOutage() throws {
        let world = try DaemonTests.world.get()
        let pg = try PostgresServer()
        let cache = "cache:\n  type: postgres\n  options:\n    dsn: \"\(pg.dsn)\"\n    timeout: 2"
        let a = try Daemon(world, cache: cache)
        #expect(try a.postmap(["good.test"]) == ["good.test": "secure match=mail.good.test servername=hostname"])
        pg.stop()
        // Down: resolved live.
        let none = try a.postmapOne("no-record.test")
        #expect(none.status != 0 && !none.stderr.contains("temporary error"), "\(none.stderr)")
        #expect(try a.postmap(["wild.test"]) == ["wild.test": "secure match=a.mx.wild.test:mail.wild.test servername=hostname"], "\(a.log)")
        #expect(a.log.contains("running degraded"), "\(a.log)")
        // A daemon started during the outage serves.
        let b = try Daemon(world, cache: cache)
        #expect(b.log.contains("starting without it (degraded)"), "\(b.log)")
        #expect(try b.postmap(["good.test", "no-data.test"]) == ["good.test": "secure match=mail.good.test servername=hostname"], "\(b.log)")
        // Back: the next look-up after the retry delay finds the store, and what b fetched is written.
        try pg.start()
        Thread.sleep(forTimeInterval: 5.5)
        _ = try b.postmap(["testing.test"])
        var stored: [String] = []
        let deadline = Date().addingTimeInterval(15)
        repeat {
            stored = (try? pg.psql("SELECT domain FROM sts_policy_cache ORDER BY domain")) ?? []
            if stored.contains("no-data.test") && stored.contains("testing.test") { break }
            Thread.sleep(forTimeInterval: 0.25)
        } while Date() < deadline
        #expect(stored.contains("no-data.test") && stored.contains("testing.test"), "\(stored)\n\(a.log)\n\(b.log)")
        #expect(b.log.contains("answers again"), "\(b.log)")

        // Frozen (SIGSTOP): connections hang instead of failing.
        try pg.freeze()
        defer { try? pg.thaw() }
        let c = try Daemon(world, cache: cache)
        let keys = (0..<100).map { i in ["good.test", "no-record.test", "wild.test", "bad-cert1.test", "valid-none.test", "nx\(i).test"][i % 6] }
        let started = Date()
        let answers = ParallelAnswers()
        DispatchQueue.concurrentPerform(iterations: keys.count) { i in
            let out = try? c.postmapOne(keys[i])
            answers.add(keys[i], out)
        }
        let took = Date().timeIntervalSince(started)
        // dns_timeout 2 (6 s per query): store 2 + record 6 + addresses 6 + fetch 4 + 1 = 19 s.
        #expect(took < 19, "100 look-ups took \(took) s")
        #expect(answers.count == 100)
        #expect(answers.values("good.test").allSatisfy { $0 == "secure match=mail.good.test servername=hostname" }, "\(answers.all)")
        #expect(answers.values("wild.test").allSatisfy { $0 == "secure match=a.mx.wild.test:mail.wild.test servername=hostname" }, "\(answers.all)")
        #expect(answers.temporary == 0 || answers.temporaryKeys.allSatisfy { $0 == "bad-cert1.test" }, "\(answers.all)")
        _ = (a, b)
    }

    /// Issue 13 #5: a zone time-out above 20 s is honoured (the reply deadline follows the
    /// configured time-outs); #7: 1,000 look-ups of domains without MTA-STS in a cache of 100 do not
    /// push out a cached policy (no second fetch; it is still enforced).
    @Test func slowZoneAndEviction() throws {
        let world = try DaemonTests.world.get()
        let metricsPort = TestServer.freePort()
        let daemon = try Daemon(world, cache: "cache:\n  type: internal\n  options:\n    cache_size: 100",
                                extra: "metrics:\n  port: \(metricsPort)")
        let slowDaemon = try Daemon(world, cache: "cache:\n  type: internal", zones: "zones:\n  slow:\n    timeout: 30\n")
        let started = Date()
        let slow = try slowDaemon.postmapOne("slow.test", name: "slow")
        #expect(slow.stdout.hasPrefix("secure match=mail.slow.test"), "\(Date().timeIntervalSince(started)) s: \(slow.stdout) \(slow.stderr)\n\(slowDaemon.log)")
        #expect(Date().timeIntervalSince(started) > 20)

        #expect(try daemon.postmap(["good.test"]) == ["good.test": "secure match=mail.good.test servername=hostname"])
        let others = (0..<1_000).map { "nx\($0).test" }
        #expect(try daemon.postmap(others).isEmpty)
        #expect(try daemon.postmap(["good.test"]) == ["good.test": "secure match=mail.good.test servername=hostname"])
        let metrics = try CLI.program("/usr/bin/curl", ["-s", "http://127.0.0.1:\(metricsPort)/metrics"])
        #expect(metrics.stdout.contains("mtasts_fetch_outcomes_total{result=\"success\"} 1\n"), "\(metrics.stdout)")
        #expect(metrics.stdout.contains("mtasts_fetch_outcomes_total{result=\"no-record\"} 1000"), "\(metrics.stdout)")
    }

    /// SIGHUP reloads zones; a bad file keeps the running configuration. Metrics over HTTP.
    @Test func reloadAndMetrics() throws {
        let world = try DaemonTests.world.get()
        let metricsPort = TestServer.freePort()
        let daemon = try Daemon(world, cache: "cache:\n  type: internal", extra: "metrics:\n  port: \(metricsPort)")
        #expect(try daemon.postmap(["testing.test"]).isEmpty)
        var text = try String(contentsOfFile: daemon.configPath, encoding: .utf8)
        text += "default_zone:\n  strict_testing: true\n"
        try text.write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        let deadline = Date().addingTimeInterval(5)
        while !daemon.log.contains("configuration reloaded") && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(try daemon.postmap(["testing.test"]) == ["testing.test": "secure match=mail.testing.test servername=hostname"])
        try (text + "bogus_key: 1\n").write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        let deadline2 = Date().addingTimeInterval(5)
        while !daemon.log.contains("not reloaded") && Date() < deadline2 { Thread.sleep(forTimeInterval: 0.05) }
        #expect(daemon.log.contains("unknown key 'bogus_key'"), "\(daemon.log)")
        #expect(try daemon.postmap(["testing.test"]).count == 1)

        let metrics = try CLI.program("/usr/bin/curl", ["-s", "http://127.0.0.1:\(metricsPort)/metrics"])
        #expect(metrics.stdout.contains("mtasts_lookups_total 3"), "\(metrics.stdout)")
        #expect(metrics.stdout.contains("mtasts_cache_hits_total 2"))
        #expect(metrics.stdout.contains("mtasts_fetch_outcomes_total{result=\"success\"} 1"))
        #expect(metrics.stdout.contains("mtasts_reply_seconds_count 3"))
    }

    /// The Grafana dashboard (contrib/grafana) reads only metrics that the daemon and serve export:
    /// every name its expressions use is in metrics-used.txt, and every name there is in the
    /// /metrics text of a daemon (SQLite cache, collector) after a look-up, or of serve.
    @Test func grafanaDashboardMetricsExist() throws {
        let world = try DaemonTests.world.get()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../contrib/grafana").standardized
        let used = try String(contentsOf: root.appendingPathComponent("metrics-used.txt"), encoding: .utf8).split(separator: "\n").map(String.init).filter { !$0.isEmpty }
        let dashboard = try String(contentsOf: root.appendingPathComponent("mtasts-dashboard.json"), encoding: .utf8)
        #expect((try? JSONSerialization.jsonObject(with: Data(dashboard.utf8))) is [String: Any])
        let named = Set(try NSRegularExpression(pattern: "mtasts_[a-z_]+").matches(in: dashboard, range: NSRange(dashboard.startIndex..., in: dashboard))
            .map { String(dashboard[Range($0.range, in: dashboard)!]) })
        // A histogram's base name (in a description or a heatmap) stands for its _bucket/_sum/_count.
        let unknown = named.filter { name in !used.contains(name) && !used.contains(name + "_bucket") }
        #expect(unknown.isEmpty, "names in the dashboard not in metrics-used.txt: \(unknown)")
        let metricsPort = TestServer.freePort()
        let db = world.dir.appendingPathComponent("grafana-\(UUID().uuidString.prefix(6)).db").path
        let socket = world.dir.appendingPathComponent("grafana-\(UUID().uuidString.prefix(6)).sock").path
        let daemon = try Daemon(world, cache: "cache:\n  type: sqlite\n  options:\n    filename: \(db)",
                                extra: "metrics:\n  port: \(metricsPort)\ntlsrpt_database: \"\(db).tlsrpt\"\ncollector:\n  socket: \(socket)")
        #expect(try daemon.postmap(["good.test"]).count == 1)
        let daemonText = try CLI.program("/usr/bin/curl", ["-s", "http://127.0.0.1:\(metricsPort)/metrics"]).stdout
        let serve = try Serve(dir: world.dir, database: world.dir.appendingPathComponent("grafana-serve.db").path)
        let serveText = try CLI.program("/usr/bin/curl", ["-s", serve.base + "/metrics"]).stdout
        let exported = Set((daemonText + "\n" + serveText).split(separator: "\n").filter { !$0.hasPrefix("#") }
            .map { String($0.prefix { $0 != "{" && $0 != " " }) })
        #expect(Set(used).subtracting(exported).isEmpty, "not exported: \(Set(used).subtracting(exported))\n\(daemonText)\n\(serveText)")
    }

    /// `mtasts query`: the policy, its source and the reply; exit 0 / 1 / 3.
    @Test func queryCommand() throws {
        let world = try DaemonTests.world.get()
        let db = world.dir.appendingPathComponent("query-\(UUID().uuidString.prefix(6)).db").path
        let config = world.dir.appendingPathComponent("query.yml").path
        try """
            cache:
              type: sqlite
              options:
                filename: \(db)
            dns_server: \(world.dns.server)
            dns_timeout: 2
            ca_file: \(world.caFile)
            system_roots: false
            policy_port: \(world.policyPort)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let fresh = try CLI.run(["query", "--config", config, "--json", "wild.test"])
        #expect(fresh.status == 0, "\(fresh.stderr)")
        let json = try #require(fresh.json as? [String: Any])
        #expect(json["status"] as? String == "policy" && json["source"] as? String == "fetched")
        #expect(json["reply"] as? String == "OK secure match=a.mx.wild.test:mail.wild.test servername=hostname")
        #expect(((json["policy"] as? [String: Any])?["mx"] as? [String]) == ["mail.wild.test", "*.mx.wild.test"])
        let cached = try CLI.run(["query", "--config", config, "--json", "wild.test"])
        #expect((cached.json as? [String: Any])?["source"] as? String == "cache")
        let text = try CLI.run(["query", "--config", config, "good.test"])
        #expect(text.status == 0 && text.stdout.contains("reply:    OK secure match=mail.good.test servername=hostname"), "\(text.stdout)")
        let none = try CLI.run(["query", "--config", config, "--json", "bad-cert2.test"])
        #expect(none.status == 1)
        #expect((none.json as? [String: Any])?["failure"] as? String == "sts-webpki-invalid")
        #expect(try CLI.run(["query", "--config", config, "[1.2.3.4]"]).status == 1)
        // SERVFAIL with nothing cached: no policy (exit 1), the reason naming the DNS failure.
        let broken = try CLI.run(["query", "--config", config, "--json", "x.broken.example"])
        #expect(broken.status == 1, "\(broken.stdout)")
        #expect(((broken.json as? [String: Any])?["reason"] as? String)?.contains("DNS failed") == true, "\(broken.stdout)")
        #expect(try CLI.run(["query"]).status == 2)
    }

    /// Issue 13 #8: `check` says whether a sender applies each domain's policy, and `query` (the
    /// daemon's resolver) agrees, with the same RFC 8460 result type, across one loopback world.
    @Test func checkAndQueryAgree() throws {
        let world = try DaemonTests.world.get()
        let config = world.dir.appendingPathComponent("agree.yml").path
        try """
            cache:
              type: internal
            dns_server: \(world.dns.server)
            dns_timeout: 2
            ca_file: \(world.caFile)
            system_roots: false
            policy_port: \(world.policyPort)
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let domains = ["good.test", "testing.test", "valid-none.test", "wild.test", "no-record.test", "no-data.test", "bad-record1.test",
                       "bad-record3.test", "bad-policy1.test", "bad-policy2.test", "bad-policy3.test", "bad-policy4.test", "bad-policy6.test",
                       "static-overlength.test", "bad-cert1.test", "bad-cert2.test", "redirect.test", "charset.test", "client-auth.test",
                       "two-records.test", "dead-address.test", "x.broken.example"]
        let checked = try CLI.run(["check", "--json", "--no-smtp", "--dns-server", world.dns.server, "--ca-file", world.caFile,
                                   "--policy-port", String(world.policyPort), "--timeout", "3"] + domains)
        let reports = try #require(checked.json as? [[String: Any]], "\(checked.stdout)\(checked.stderr)")
        var seen: [String: (Bool, String?)] = [:]
        for report in reports {
            let sender = report["sender"] as? [String: Any] ?? [:]
            seen[report["domain"] as? String ?? ""] = (sender["applies"] as? Bool ?? false, sender["result_type"] as? String)
        }
        var applied: [String] = []
        for d in domains {
            let q = try CLI.run(["query", "--config", config, "--no-cache", "--json", d])
            let answer = try #require(q.json as? [String: Any], "\(d): \(q.stdout)\(q.stderr)")
            let queryApplies = answer["status"] as? String == "policy"
            let queryType = answer["failure"] as? String
            let check = try #require(seen[d], "check said nothing of \(d)")
            #expect(check.0 == queryApplies && check.1 == queryType, "\(d): check \(check), query \(queryApplies) \(queryType ?? "-")")
            if queryApplies { applied.append(d) }
        }
        // The world holds both kinds: applied policies (with a charset parameter, behind a dead
        // address, max_age capped) and every kind of refusal.
        #expect(Set(applied) == ["good.test", "testing.test", "valid-none.test", "wild.test", "bad-policy6.test", "charset.test", "dead-address.test"], "\(applied)")
        #expect(seen["client-auth.test"]?.1 == "sts-webpki-invalid" && seen["redirect.test"]?.1 == "sts-policy-fetch-error" && seen["bad-policy3.test"]?.1 == "sts-policy-invalid")
    }

    /// Configuration: postfix-mta-sts-resolver's own file is accepted; mistakes are errors with the line.
    @Test func configuration() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mtasts-cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        func check(_ yaml: String) throws -> CLI.Output {
            let path = dir.appendingPathComponent("c-\(UUID().uuidString.prefix(6)).yml").path
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            return try CLI.run(["daemon", "--check-config", path])
        }
        let anchor = """
            host: 127.0.0.1
            port: 8461
            reuse_port: true
            shutdown_timeout: 20
            cache_grace: 60
            proactive_policy_fetching:
              enabled: true
              interval: 86400
              concurrency_limit: 100
              grace_ratio: 2.0
            cache:
              type: sqlite
              options:
                filename: "/var/lib/mta-sts/cache.db"
                threads: 4
                timeout: 5
            default_zone:
              strict_testing: false
              timeout: 4
              require_sni: true
            zones:
              myzone:
                strict_testing: false
                timeout: 4
                tlsrpt: true
            """
        #expect(try check(anchor).status == 0)
        #expect(try check("path: /run/mta-sts.sock\nmode: 0666\ncache:\n  type: postgres\n  options:\n    dsn: postgres://u@%2Frun%2Fpostgresql/db\n").status == 0)
        let unknown = try check("host: 127.0.0.1\nprot: 8461\n")
        #expect(unknown.status == 2 && unknown.stderr.contains(":2: unknown key 'prot'"), "\(unknown.stderr)")
        let wrongType = try check("port: eighty\n")
        #expect(wrongType.status == 2 && wrongType.stderr.contains(":1: port must be a whole number"), "\(wrongType.stderr)")
        let redis = try check("cache:\n  type: redis\n  options:\n    address: redis://localhost\n")
        #expect(redis.status == 2 && redis.stderr.contains("'redis' is not supported: use type 'postgres'"), "\(redis.stderr)")
        let zone = try check("zones:\n  a:\n    strict_testing: maybe\n")
        #expect(zone.status == 2 && zone.stderr.contains(":3: zones.a.strict_testing must be true or false"), "\(zone.stderr)")
        #expect(try check("{ unclosed").status == 2)

        // Against Debian's Postfix (postconf -c): a zone that says its Postfix does DANE, asked by
        // a Postfix without DNSSEC, is a contradiction (exit 1), named with the main.cf lines.
        let postfix = dir.appendingPathComponent("postfix")
        try FileManager.default.createDirectory(at: postfix, withIntermediateDirectories: true)
        try "compatibility_level = 3.6\nsmtp_tls_security_level = may\nsmtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:dane\n"
            .write(to: postfix.appendingPathComponent("main.cf"), atomically: true, encoding: .utf8)
        let daneConfig = dir.appendingPathComponent("dane.yml").path
        try "zones:\n  dane:\n    dnssec: true\n".write(toFile: daneConfig, atomically: true, encoding: .utf8)
        let contradicted = try CLI.run(["daemon", "--check-config", daneConfig, "--postfix-config", postfix.path])
        #expect(contradicted.status == 1, "\(contradicted.stdout)\(contradicted.stderr)")
        #expect(contradicted.stdout.contains("error (zone dane): the zone says Postfix does DANE (dnssec), but smtp_dns_support_level is ''"), "\(contradicted.stdout)")
        #expect(contradicted.stdout.contains("smtp_dns_support_level = dnssec"))
        try "compatibility_level = 3.6\nsmtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\nsmtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:dane\n"
            .write(to: postfix.appendingPathComponent("main.cf"), atomically: true, encoding: .utf8)
        let consistent = try CLI.run(["daemon", "--check-config", daneConfig, "--postfix-config", postfix.path, "--json"])
        #expect(consistent.status == 0, "\(consistent.stdout)\(consistent.stderr)")
        let report = try #require(consistent.json as? [String: Any])
        #expect(report["valid"] as? Bool == true && (report["postfix_version"] as? String)?.hasPrefix("3.") == true, "\(consistent.stdout)")
    }
}

/// postmap answers gathered from several threads.
final class ParallelAnswers: @unchecked Sendable {
    private let lock = NSLock()
    private var answers: [(String, CLI.Output?)] = []
    func add(_ key: String, _ out: CLI.Output?) { lock.withLock { answers.append((key, out)) } }
    var count: Int { lock.withLock { answers.count } }
    var all: String { lock.withLock { answers.map { "\($0.0): \($0.1?.stdout ?? "") \($0.1?.stderr ?? "")" }.joined(separator: "\n") } }
    func values(_ key: String) -> [String] {
        lock.withLock { answers.filter { $0.0 == key }.map { $0.1?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) ?? "" } }
    }
    var temporaryKeys: [String] { lock.withLock { answers.filter { $0.1?.stderr.contains("temporary error") ?? true }.map(\.0) } }
    var temporary: Int { temporaryKeys.count }
}
