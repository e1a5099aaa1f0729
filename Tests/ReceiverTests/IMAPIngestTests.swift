import Foundation
import Testing
import TestSupport

/// `mtasts reports ingest --imap` against a real Dovecot (Debian's dovecot-imapd, started by the
/// test on loopback with its own configuration and a certificate from the test CA).
@Suite(.serialized) struct IMAPIngestTests {
    let dir: URL

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("imap-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    func tally(_ out: CLI.Output) -> [String: Any] { jsonObject(out.stdout) }

    /// A Dovecot with a certificate from a test CA, the CA file, a password file and the imaps URL.
    struct Lab {
        let ca: TestCA
        let caFile: String
        let dovecot: DovecotServer
        let passwordFile: String
        var user: String { dovecot.user.replacingOccurrences(of: "@", with: "%40") }
        var url: String { "imaps://\(user)@localhost:\(dovecot.imapsPort)/INBOX" }
    }

    func lab() throws -> Lab {
        let ca = try TestCA()
        let caFile = try ca.writePEM(to: dir)
        let dovecot = try DovecotServer.start(ca: ca)
        let passwordFile = dir.appendingPathComponent("pw").path
        try (dovecot.password + "\n").write(toFile: passwordFile, atomically: true, encoding: .utf8)
        return Lab(ca: ca, caFile: caFile, dovecot: dovecot, passwordFile: passwordFile)
    }

    @Test("the interop report mails in a mailbox are all stored; a re-run takes none; flags, move, UIDVALIDITY, STARTTLS")
    func mailbox() throws {
        let lab = try lab(), dovecot = lab.dovecot, caFile = lab.caFile, passwordFile = lab.passwordFile, url = lab.url
        defer { dovecot.stop() }
        let mails = interopFiles { $0.hasSuffix(".eml") }
        #expect(mails.count >= 10)
        for file in mails { _ = try dovecot.deliver(Array(try Data(contentsOf: CLI.interop.appendingPathComponent("reports/\(file)")))) }
        // What the file route stores from the same mails.
        let filesDB = dir.appendingPathComponent("files.db").path
        let byFiles = tally(try CLI.run(["reports", "ingest", "--dkim", "ignore", "--json", "--database", filesDB]
                                        + mails.map { CLI.interop.appendingPathComponent("reports/\($0)").path }))
        let expected = try #require(byFiles["stored"] as? Int)
        #expect(expected > 0)

        let db = dir.appendingPathComponent("imap.db").path
        func ingest(_ extra: [String] = [], url: String = url) throws -> CLI.Output {
            try CLI.run(["reports", "ingest", "--imap", url, "--imap-password-file", passwordFile, "--imap-ca-file", caFile,
                         "--dkim", "ignore", "--json", "--database", db] + extra)
        }
        let first = try ingest()
        #expect(first.status == 0, "\(first.stderr)")
        #expect(tally(first)["messages"] as? Int == mails.count && tally(first)["stored"] as? Int == expected, "\(first.stdout) \(first.stderr)")
        // Every message taken is flagged \Seen (Maildir: cur/…:2,S).
        #expect(dovecot.messages().count == mails.count && dovecot.messages().allSatisfy { $0.hasSuffix("S") }, "\(dovecot.messages())")
        // A re-run takes none.
        let again = try ingest()
        #expect(again.status == 0 && tally(again)["messages"] as? Int == 0, "\(again.stdout) \(again.stderr)")
        // The same lists and summaries as the file route.
        let listed = try CLI.run(["reports", "list", "--json", "--limit", "10000", "--database", db]).stdout
        #expect(((try? JSONSerialization.jsonObject(with: Data(listed.utf8))) as? [Any])?.count == expected)

        // A new UIDVALIDITY (the mailbox re-created): read again from the first message, nothing stored twice.
        let py = try CLI.run(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('UPDATE imap_progress SET uid_validity = uid_validity + 1'); c.commit()", db],
                             executable: URL(fileURLWithPath: "/usr/bin/python3"))
        #expect(py.status == 0, "\(py.stderr)")
        let reread = try ingest()
        #expect(reread.stderr.contains("UIDVALIDITY changed"), "\(reread.stderr)")
        #expect(tally(reread)["messages"] as? Int == mails.count && tally(reread)["stored"] as? Int == 0, "\(reread.stdout)")

        // STARTTLS on the imap port, processed mail moved to a folder created for it.
        _ = try dovecot.deliver(Array(try Data(contentsOf: CLI.interop.appendingPathComponent("reports/\(mails[0])"))))
        let plainURL = "imap://\(dovecot.user.replacingOccurrences(of: "@", with: "%40"))@localhost:\(dovecot.imapPort)/INBOX"
        let moved = try ingest(["--imap-move-to", "Processed"], url: plainURL)
        #expect(moved.status == 0 && tally(moved)["messages"] as? Int == 1 && tally(moved)["duplicates"] as? Int == 1, "\(moved.stdout) \(moved.stderr)")
        #expect(dovecot.messages(in: "Processed").count == 1)
        #expect(dovecot.messages().count == mails.count)
    }

    @Test("a message whose DKIM key cannot be looked up now is deferred; the messages after it are taken meanwhile")
    func deferral() throws {
        let lab = try lab(), dovecot = lab.dovecot, caFile = lab.caFile, passwordFile = lab.passwordFile, url = lab.url
        defer { dovecot.stop() }
        // A signed message first (its key cannot be looked up: no DNS server answers), an unsigned one after it.
        for file in ["mox/microsoft.eml", "tlsrpt-be/test.eml"] {
            _ = try dovecot.deliver(Array(try Data(contentsOf: CLI.interop.appendingPathComponent("reports/\(file)"))))
        }
        let db = dir.appendingPathComponent("defer.db").path
        func ingest(_ dkim: [String]) throws -> CLI.Output {
            try CLI.run(["reports", "ingest", "--imap", url, "--imap-password-file", passwordFile, "--imap-ca-file", caFile, "--json", "--database", db] + dkim)
        }
        let first = try ingest(["--dkim", "require", "--dns-server", "127.0.0.1:\(TestServer.freePort())"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.contains("deferred to the next run"), "\(first.stderr)")
        // The unsigned one was taken (refused by the policy, and marked done); the signed one was not.
        #expect(tally(first)["refused"] as? Int == 1 && tally(first)["stored"] as? Int == 0, "\(first.stdout)")
        #expect(dovecot.messages().filter { $0.hasSuffix("S") }.count == 1, "\(dovecot.messages())")
        // The next run takes the deferred one again.
        let second = try ingest(["--dkim", "ignore"])
        #expect(second.status == 0 && (tally(second)["stored"] as? Int ?? 0) >= 1, "\(second.stdout) \(second.stderr)")
        #expect(dovecot.messages().allSatisfy { $0.hasSuffix("S") })
    }

    @Test("a wrong password, a certificate from another CA, a password on the command line: clear errors")
    func refusals() throws {
        let lab = try lab(), dovecot = lab.dovecot, caFile = lab.caFile, url = lab.url, user = lab.user
        defer { dovecot.stop() }
        let other = try TestCA(commonName: "Another CA")
        let otherDir = dir.appendingPathComponent("other")
        try FileManager.default.createDirectory(at: otherDir, withIntermediateDirectories: true)
        let otherFile = try other.writePEM(to: otherDir)
        let db = dir.appendingPathComponent("r.db").path
        let wrong = try CLI.run(["reports", "ingest", "--imap", url, "--imap-ca-file", caFile, "--database", db], environment: ["MTASTS_IMAP_PASSWORD": "wrong"])
        #expect(wrong.status == 2, "\(wrong.stderr)")
        #expect(wrong.stderr.contains("refused the login for \(dovecot.user)"), "\(wrong.stderr)")
        let untrusted = try CLI.run(["reports", "ingest", "--imap", url, "--imap-ca-file", otherFile, "--database", db],
                                    environment: ["MTASTS_IMAP_PASSWORD": dovecot.password])
        #expect(untrusted.status == 3, "\(untrusted.stderr)")
        #expect(untrusted.stderr.lowercased().contains("certificate"), "\(untrusted.stderr)")
        #expect(!dovecot.log.contains("Login: user=<\(dovecot.user)>"), "no log-in succeeded: \(dovecot.log)")
        let inline = try CLI.run(["reports", "ingest", "--imap", "imaps://\(user):secret@localhost:\(dovecot.imapsPort)/INBOX", "--database", db])
        #expect(inline.status == 2 && inline.stderr.contains("file or an environment variable"), "\(inline.stderr)")
        let none = try CLI.run(["reports", "ingest", "--imap", url, "--database", db])
        #expect(none.status == 2 && none.stderr.contains("MTASTS_IMAP_PASSWORD"), "\(none.stderr)")
    }

    @Test("--idle takes a message delivered while it waits, within seconds, and stops on SIGTERM")
    func idle() throws {
        let lab = try lab(), dovecot = lab.dovecot, caFile = lab.caFile, passwordFile = lab.passwordFile, url = lab.url
        defer { dovecot.stop() }
        let db = dir.appendingPathComponent("idle.db").path
        let log = dir.appendingPathComponent("idle.log").path
        let mail = try #require(interopFiles { $0.hasSuffix(".eml") }.first)
        let process = try Spawned(CLI.binary.path, ["reports", "ingest", "--imap", url, "--imap-password-file", passwordFile, "--imap-ca-file", caFile,
                                                    "--dkim", "ignore", "--idle", "--verbose", "--database", db], stderrPath: log)
        defer { process.stop() }
        // Logged in and idle: Dovecot logs the login; nothing to take yet.
        let deadline = Date().addingTimeInterval(15)
        while !dovecot.log.contains("Login: user=<\(dovecot.user)>") && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        Thread.sleep(forTimeInterval: 0.5)
        _ = try dovecot.deliver(Array(try Data(contentsOf: CLI.interop.appendingPathComponent("reports/\(mail)"))))
        let delivered = Date()
        var stored = false
        while !stored && Date().timeIntervalSince(delivered) < 10 {
            Thread.sleep(forTimeInterval: 0.2)
            stored = (try? String(contentsOfFile: log, encoding: .utf8))?.contains("stored as #") == true
        }
        #expect(stored, "\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "") \(dovecot.log)")
        print("IDLE: stored \(String(format: "%.1f", Date().timeIntervalSince(delivered))) s after delivery")
        if let pid = process.childPID { kill(pid, SIGTERM) }
        let end = Date().addingTimeInterval(10)
        while !process.hasExited && Date() < end { Thread.sleep(forTimeInterval: 0.1) }
        #expect(process.hasExited)
        #expect(dovecot.messages().allSatisfy { $0.hasSuffix("S") })
    }
}
