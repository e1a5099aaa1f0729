import Foundation
import IMAP
import MTASTSCore
import NIOCore
import NIOSSL

/// `mtasts reports ingest --imap`: report mail taken from an IMAP mailbox.
///
/// The last UID taken is kept in the database per mailbox (`user@host/MAILBOX`) under the
/// mailbox's UIDVALIDITY: a re-run asks only for newer UIDs; a new UIDVALIDITY (the mailbox was
/// re-created) starts over from the first message, and the de-duplication of stored reports keeps
/// that from storing anything twice. Each message is fetched without setting `\Seen`
/// (BODY.PEEK), goes through the same ingestor as every other route (DKIM policy, refusals,
/// duplicates), and only then is marked done: moved to `moveTo`, or given `flag` (`\Seen` by
/// default), and the progress written. A temporary failure (database, DNS) stops the run before
/// the message is marked, so the next run takes it again.
public struct IMAPIngest: Sendable {
    public var url: IMAPURL
    public var password: String
    public var tls: TLSConfiguration
    public var moveTo: String?
    public var flag: String?
    public var maxSize: Int
    /// Seconds for a connection, and for each command's answer.
    public var timeout: Int64 = 60
    /// Messages marked done (flagged or moved, progress written) at once.
    public var batch = 200
    /// RFC 2177 §3: a client re-issues IDLE at least every 29 minutes.
    public var idleReissue: TimeAmount = .minutes(29)

    public init(url: IMAPURL, password: String, tls: TLSConfiguration, moveTo: String?, flag: String?, maxSize: Int) {
        self.url = url
        self.password = password
        self.tls = tls
        self.moveTo = moveTo
        self.flag = flag
        self.maxSize = maxSize
    }

    /// The mailbox, whatever the port or TLS mode it is reached by.
    /// A set-up that cannot be used, said for the command line.
    public struct SetupError: Error, CustomStringConvertible {
        public var description: String
    }

    /// From `reports ingest`'s options: the URL (no password in it), the password from `passwordFile`
    /// or `MTASTS_IMAP_PASSWORD` in `environment` (never the command line), TLS 1.2 or later with
    /// the system's trust anchors and `caFiles`; processed messages moved to `moveTo` (another
    /// folder than the one read) or given `flag`.
    public init(url text: String, passwordFile: String?, environment: [String: String], caFiles: [String], moveTo: String?, flag: String,
                maxSize: Int) throws(SetupError) {
        let url: IMAPURL
        do { url = try IMAPURL(parsing: text) } catch { throw SetupError(description: "--imap: \(error)") }
        if let moveTo, moveTo == url.mailbox || (moveTo.uppercased() == "INBOX" && url.mailbox.uppercased() == "INBOX") {
            throw SetupError(description: "--imap-move-to must name another folder than the one read (\(url.mailbox))")
        }
        var password: String
        if let file = passwordFile {
            guard let data = FileManager.default.contents(atPath: file), let content = String(data: data, encoding: .utf8) else {
                throw SetupError(description: "--imap-password-file: cannot read \(file)")
            }
            password = content
            // Line ends off (by scalar: "\r\n" is one Character, which hasSuffix("\n") does not match).
            while let last = password.unicodeScalars.last, last == "\n" || last == "\r" { password.unicodeScalars.removeLast() }
        } else if let env = environment["MTASTS_IMAP_PASSWORD"], !env.isEmpty {
            password = env
        } else {
            throw SetupError(description: "--imap needs a password: --imap-password-file FILE or the environment variable MTASTS_IMAP_PASSWORD")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.additionalTrustRoots = caFiles.map { .file($0) }
        self.init(url: url, password: password, tls: tls, moveTo: moveTo, flag: moveTo == nil ? flag : nil, maxSize: maxSize)
    }

    public var account: String { "\(url.user)@\(url.host)/\(url.mailbox)" }

    /// A failure of the IMAP side, worded for the postmaster; `login` when the credentials were refused.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public var login: Bool
        public var temporary: Bool
    }

    /// Takes the new messages; with `idle`, then waits for more (IDLE) and takes them as they
    /// come, until the task is cancelled. `ready` is called once the mailbox is selected and
    /// the first batch is done (tests wait for it).
    public func run(_ run: IngestRun, idle: Bool, ready: @Sendable () -> Void = {}) async throws {
        let store = run.ingestor.store
        do {
            try await IMAPClient.connect(host: url.host, port: url.port, security: url.security, tls: tls,
                                         connectTimeout: .seconds(timeout), commandTimeout: .seconds(timeout), maxLiteral: maxSize) { client in
                try await client.login(user: url.user, password: password)
                if let moveTo { try await client.create(moveTo) }
                var first = true
                while true {
                    let status = try await client.select(url.mailbox)
                    var last: UInt32 = 0
                    if let progress = try store.imapProgress(account: account) {
                        if progress.uidValidity == status.uidValidity {
                            last = progress.lastUID
                        } else {
                            run.log("\(account): UIDVALIDITY changed (\(progress.uidValidity) → \(status.uidValidity)): the mailbox is read again from its first message; stored reports are not stored twice")
                        }
                    }
                    // Messages taken are marked done (flag or move, then the progress) in batches:
                    // a crash in between only makes the next run take a few again, and the
                    // reports are not stored twice. A message deferred (its DKIM key could not be
                    // looked up now, or its body did not come) is not marked, and the progress
                    // stays below it, so that the next run takes it again; the messages after it
                    // are taken meanwhile (a stranger's failing DNS cannot hold up the mailbox).
                    var done: [UInt32] = [], deferredBelow: UInt32?
                    func markDone() async throws {
                        guard let newest = done.last else { return }
                        if let moveTo { try await client.move(uids: done, to: moveTo) } else if let flag { try await client.addFlag(uids: done, flag) }
                        let progress = min(newest, deferredBelow.map { $0 &- 1 } ?? newest)
                        if progress > last { try store.setImapProgress(account: account, uidValidity: status.uidValidity, lastUID: progress) }
                        done = []
                    }
                    do {
                        // A UID at or above UIDNEXT cannot be in the mailbox yet (a server's mistake,
                        // or mail that came after SELECT): the next pass takes it.
                        let uids = try await client.uidSearch(from: last &+ 1).filter { uid in uid > last && (status.uidNext.map { uid < $0 } ?? true) }
                        for uid in uids {
                            let name = "imap \(url.mailbox) UID \(uid)"
                            do {
                                guard let bytes = try await client.fetchMessage(uid: uid) else {
                                    run.log("\(name): no body came (expunged meanwhile?); taken again next run if it is still there")
                                    deferredBelow = deferredBelow ?? uid
                                    continue
                                }
                                try await run.message(bytes, name: name)
                            } catch let error as IMAPError where error.code == .messageTooLarge {
                                run.skipped(name, "larger than \(maxSize) bytes (\(error.size.map(String.init) ?? "?") bytes): left in the mailbox, marked done")
                            } catch let error as MTASTSError where error.code == .dns {
                                run.log("\(error); deferred to the next run, the messages after it are taken now")
                                deferredBelow = deferredBelow ?? uid
                                continue
                            }
                            done.append(uid)
                            if done.count >= batch { try await markDone() }
                        }
                    } catch {
                        // A temporary failure stops the run: what was taken before it is marked done.
                        try? await markDone()
                        throw error
                    }
                    try await markDone()
                    if first { ready(); first = false }
                    guard idle else { break }
                    _ = try await client.idle(until: .now() + idleReissue)
                }
                try? await client.logout()
            }
        } catch let error as IMAPError {
            throw Failure(description: "\(url): \(error)", login: error.code == .loginRefused,
                          temporary: [.unreachable, .timeout, .closed].contains(error.code))
        }
    }
}

extension IMAPIngest.Failure: MTASTSErrorConvertible {
    /// A refused log-in is the configuration's (exit 2); a server that cannot be reached now is
    /// temporary; a certificate or protocol failure is a network failure retrying will not fix by itself.
    public var mtastsError: MTASTSError {
        login ? MTASTSError(.configuration, description) : MTASTSError(.network, description, temporary: temporary)
    }
}
