import Foundation

/// A Dovecot IMAP server (Debian's 2.3) in a temporary directory on 127.0.0.1, for one test:
/// IMAP with STARTTLS on `imapPort`, implicit TLS on `imapsPort`, one user with a plain password
/// in a passwd-file, Maildir storage in the directory, a certificate for `localhost` from the
/// test's CA. Nothing outside the directory is touched (own base_dir, state_dir, log), so tests
/// can run servers side by side. Stopped on `stop()` or deinit.
///
/// Mail is delivered as an MTA does: a file written into the Maildir's `tmp/`, then renamed into
/// `new/`; Dovecot sees it at the next command, and at once (inotify) in IDLE. Dovecot gives UIDs
/// to new files in the order of their names, and `deliver` names them in delivery order.
///
/// Dovecot runs as root (the tests do) and drops to `dovenull` for its login processes and to
/// `nobody` for mail access; the Maildirs belong to `nobody`. Note: Dovecot counts a client on
/// 127.0.0.1 as secure, so it lets one log in without TLS; the client's own refusal is what a
/// test of "no credentials in plaintext" checks.
public final class DovecotServer: @unchecked Sendable {
    /// The name in the server's certificate (it resolves to 127.0.0.1).
    public let host = "localhost"
    /// IMAP (port 143 style): plaintext greeting, STARTTLS offered and required.
    public let imapPort: Int
    /// IMAPS (port 993 style): TLS from the first byte.
    public let imapsPort: Int
    public let user: String
    public let password: String
    /// The temporary directory holding configuration, runtime files, log and mail.
    public let directory: String
    private let process: Spawned
    private let mailUID: uid_t
    private let mailGID: gid_t
    private static let counter = NSLock()
    nonisolated(unsafe) private static var delivered = 0

    public struct Missing: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    static let binary = "/usr/sbin/dovecot"

    /// Starts Dovecot with a certificate for `localhost` issued by `ca`.
    /// - Parameters:
    ///   - user: the one login (an address is fine). No `:` or line breaks.
    ///   - password: its password (plain scheme in the passwd-file). No `:` or line breaks.
    ///   - extraConfiguration: lines appended to the configuration (Dovecot 2.3 syntax), e.g.
    ///     `imap_capability = IMAP4rev1 IDLE` to hide MOVE and UIDPLUS after login.
    public static func start(ca: TestCA, user: String = "reports@example.test", password: String = "s3cret pass",
                             extraConfiguration: [String] = []) throws -> DovecotServer {
        try DovecotServer(ca: ca, user: user, password: password, extraConfiguration: extraConfiguration)
    }

    private init(ca: TestCA, user: String, password: String, extraConfiguration: [String]) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw Missing(description: "Dovecot is not installed (apt-get install dovecot-imapd)")
        }
        let version = (try? CLI.program(Self.binary, ["--version"]).stdout) ?? ""
        guard version.hasPrefix("2.3.") else {
            throw Missing(description: "DovecotServer writes a Dovecot 2.3 configuration; \(Self.binary) --version says '\(version.prefix(40))'")
        }
        guard geteuid() == 0 else { throw Missing(description: "DovecotServer starts Dovecot as root (it drops privileges itself)") }
        for (what, value) in [("user", user), ("password", password)] where value.isEmpty || value.contains(where: { ":\r\n".contains($0) }) {
            throw Missing(description: "the Dovecot test \(what) must be non-empty and hold no ':' or line break")
        }
        // Login processes run as dovenull (Debian's package creates it), mail access as nobody.
        let loginUser = getpwnam("dovenull") != nil ? "dovenull" : "nobody"
        mailUID = getpwnam("nobody")?.pointee.pw_uid ?? 65534
        mailGID = getpwnam("nobody")?.pointee.pw_gid ?? 65534
        self.user = user
        self.password = password
        directory = "/tmp/mtasts-dovecot-\(UUID().uuidString.prefix(8))"
        let fm = FileManager.default
        for sub in ["", "/run", "/state", "/mail"] {
            // 0755: the unprivileged processes must reach their sockets and the mail.
            try fm.createDirectory(atPath: directory + sub, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        }
        guard chown(directory + "/mail", mailUID, mailGID) == 0 else { throw Missing(description: "chown \(directory)/mail failed") }
        let leaf = try ca.issue(dnsNames: ["localhost"])
        try leaf.certificatePEM.write(toFile: directory + "/cert.pem", atomically: true, encoding: .utf8)
        try leaf.keyPEM.write(toFile: directory + "/key.pem", atomically: true, encoding: .utf8)
        try "\(user):{PLAIN}\(password)::::::\n".write(toFile: directory + "/passwd", atomically: true, encoding: .utf8)

        var lastError = ""
        for _ in 0..<10 {
            let imap = TestServer.freePort(), imaps = TestServer.freePort()
            guard imap != imaps else { continue }
            let d = directory
            let configuration = [
                "protocols = imap",
                "listen = 127.0.0.1",
                "base_dir = \(d)/run",
                "state_dir = \(d)/state",
                "instance_name = \((d as NSString).lastPathComponent)",
                "log_path = \(d)/dovecot.log",
                "info_log_path = \(d)/dovecot.log",
                "debug_log_path = \(d)/dovecot.log",
                "auth_verbose = yes",
                "default_internal_user = root",
                "default_internal_group = root",
                "default_login_user = \(loginUser)",
                "mail_location = maildir:\(d)/mail/%u/Maildir",
                "mail_fsync = never",
                "mailbox_idle_check_interval = 1 secs",
                "passdb {", "  driver = passwd-file", "  args = scheme=PLAIN username_format=%u \(d)/passwd", "}",
                "userdb {", "  driver = static", "  args = uid=\(mailUID) gid=\(mailGID) home=\(d)/mail/%u", "}",
                "ssl = required",
                "ssl_cert = <\(d)/cert.pem",
                "ssl_key = <\(d)/key.pem",
                "ssl_min_protocol = TLSv1.2",
                "disable_plaintext_auth = yes",
                "auth_mechanisms = plain login",
                "service imap-login {",
                "  inet_listener imap {", "    address = 127.0.0.1", "    port = \(imap)", "  }",
                "  inet_listener imaps {", "    address = 127.0.0.1", "    port = \(imaps)", "    ssl = yes", "  }",
                "}",
            ] + extraConfiguration
            try (configuration.joined(separator: "\n") + "\n").write(toFile: d + "/dovecot.conf", atomically: true, encoding: .utf8)
            try? fm.removeItem(atPath: d + "/dovecot.log")
            let p = try Spawned(Self.binary, ["-F", "-c", d + "/dovecot.conf"], stderrPath: d + "/stderr")
            do {
                try p.waitForLog(d + "/dovecot.log", contains: "starting up", what: "Dovecot", timeout: 20)
                // Ready once a client is greeted (the auth process answers too).
                try Self.awaitGreeting(port: imap, timeout: 10)
                imapPort = imap
                imapsPort = imaps
                process = p
                return
            } catch {
                p.stop()
                lastError = "\(error) \((try? String(contentsOfFile: d + "/stderr", encoding: .utf8)) ?? "")"
                // Only a port taken meanwhile is worth another try.
                guard lastError.contains("Address already in use") else { break }
            }
        }
        try? fm.removeItem(atPath: directory)
        throw Missing(description: "Dovecot did not start: \(lastError)")
    }

    /// Connects to the plaintext port and reads until the greeting says "ready".
    private static func awaitGreeting(port: Int, timeout: TimeInterval) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var tv = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = UInt16(port).bigEndian
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            if rc == 0 {
                var seen: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 1024)
                while Date() < deadline, seen.count < 8192 {
                    let n = recv(fd, &buffer, buffer.count, 0)
                    guard n > 0 else { break }
                    seen += buffer[0..<n]
                    if String(decoding: seen, as: UTF8.self).contains("ready.") { return }
                }
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw Missing(description: "Dovecot did not greet on port \(port) within \(Int(timeout)) s")
    }

    /// The Maildir of `mailbox` (Maildir++ layout: INBOX is the root, others `.Name`, `.` the
    /// hierarchy separator). ASCII names only (others are modified UTF-7 on disk).
    public func maildir(of mailbox: String = "INBOX") -> String {
        let root = "\(directory)/mail/\(user)/Maildir"
        return mailbox.uppercased() == "INBOX" ? root : "\(root)/.\(mailbox)"
    }

    /// Delivers a message into `mailbox` (made when missing) and returns its file's path: written
    /// into `tmp/`, renamed into `new/`, named so that Dovecot's UIDs follow delivery order.
    @discardableResult
    public func deliver(_ message: [UInt8], to mailbox: String = "INBOX") throws -> String {
        let box = maildir(of: mailbox)
        let root = maildir(of: "INBOX")
        for dir in [root, box] {
            for sub in ["", "/new", "/cur", "/tmp"] where !FileManager.default.fileExists(atPath: dir + sub) {
                try FileManager.default.createDirectory(atPath: dir + sub, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                _ = chown(dir + sub, mailUID, mailGID)
            }
        }
        _ = chown("\(directory)/mail/\(user)", mailUID, mailGID)
        if box != root, !FileManager.default.fileExists(atPath: box + "/maildirfolder") {
            _ = FileManager.default.createFile(atPath: box + "/maildirfolder", contents: nil)
            _ = chown(box + "/maildirfolder", mailUID, mailGID)
        }
        let sequence = Self.counter.withLock { () -> Int in
            Self.delivered += 1
            return Self.delivered
        }
        let digits = String(sequence)
        let padded = String(repeating: "0", count: max(0, 8 - digits.count)) + digits
        let name = "\(Int(Date().timeIntervalSince1970)).M\(padded)P\(getpid())Q\(UUID().uuidString.prefix(8)).mtasts-test"
        let tmp = "\(box)/tmp/\(name)", final = "\(box)/new/\(name)"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(message), attributes: [.posixPermissions: 0o600]) else {
            throw Missing(description: "cannot write \(tmp)")
        }
        _ = chown(tmp, mailUID, mailGID)
        guard rename(tmp, final) == 0 else { throw Missing(description: "cannot rename \(tmp) into new/: \(String(cString: strerror(errno)))") }
        return final
    }

    /// The files of a mailbox (new/ and cur/), to check what a client did (a message moved, a
    /// flag set: Maildir keeps flags in the name after ":2,", `S` for \Seen).
    public func messages(in mailbox: String = "INBOX") -> [String] {
        let box = maildir(of: mailbox)
        return ["new", "cur"].flatMap { sub in
            ((try? FileManager.default.contentsOfDirectory(atPath: "\(box)/\(sub)")) ?? []).map { "\(sub)/\($0)" }
        }.sorted()
    }

    /// Dovecot's log (logins, errors).
    public var log: String { (try? String(contentsOfFile: directory + "/dovecot.log", encoding: .utf8)) ?? "" }

    /// Stops Dovecot: SIGTERM to the master (it ends its children), then the lifeline.
    public func stop() {
        if let pid = process.childPID, !process.hasExited {
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(5)
            while !process.hasExited && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        }
        process.stop()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
