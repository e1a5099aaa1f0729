import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// A small IMAP client (RFC 9051 / RFC 3501 subset) for reading a mailbox of reports: log in over
/// TLS, select a mailbox, find messages by UID, fetch them whole, flag or move them, wait for new
/// mail with IDLE.
///
/// Safe by construction: credentials are only ever sent over TLS (implicit, or STARTTLS with
/// the injection check); every response is bounded (`IMAPResponseStream`); every command has a
/// time limit; an argument holding CR, LF or NUL is refused before anything is written. The
/// session lives inside `connect`'s body and the connection is closed when it returns.
///
/// ```swift
/// let tls = TLSConfiguration.makeClientConfiguration()   // system trust roots, name checked
/// try await IMAPClient.connect(host: "imap.example.net", port: 993, security: .implicitTLS, tls: tls) { imap in
///     try await imap.login(user: "reports@example.net", password: secret)
///     let box = try await imap.select("INBOX")
///     for uid in try await imap.uidSearch(from: lastSeen + 1) { … try await imap.fetchMessage(uid: uid) … }
///     try await imap.logout()
/// }
/// ```
public final class IMAPClient {
    public enum Security: Sendable {
        /// TLS from the first byte (port 993).
        case implicitTLS
        /// Plaintext, then STARTTLS before anything else (port 143); refused when not offered.
        case startTLS
    }

    /// What `select` learns about the mailbox.
    public struct MailboxStatus: Equatable, Sendable {
        public var uidValidity: UInt32
        public var uidNext: UInt32?
        public var exists: Int
    }

    public enum IdleResult: Equatable, Sendable {
        /// The server announced new messages (an EXISTS above the count known at that moment).
        case newMail
        /// The deadline came first.
        case timedOut
    }

    /// The server's capabilities, upper-cased (refreshed after STARTTLS and login).
    public private(set) var capabilities: Set<String> = []
    /// The greeting was PREAUTH (over TLS): the session is already logged in.
    public private(set) var isPreauthenticated = false
    /// Messages in the selected mailbox, as the server last said (EXISTS, less EXPUNGEs).
    public private(set) var messageCount = 0
    /// The text of the server's [ALERT]s so far (RFC 9051 §7.1: to be shown to the user), control
    /// characters replaced; at most 20 kept.
    public private(set) var alerts: [String] = []
    /// Tests only: log in with LOGIN even when AUTH=PLAIN is offered (to try the LOGIN path,
    /// quoted strings and literals, against a server that offers both).
    @_spi(Testing) public var preferLoginCommand = false

    let channel: any Channel
    let handler: IMAPFrameHandler
    let inbound: InboundIterator
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let host: String
    let commandTimeout: TimeAmount
    let maxLiteral: Int
    let tlsContext: NIOSSLContext
    var tlsActive: Bool
    var tagNumber = 0
    /// Responses taken from `inbound` (to compare with the handler's count at STARTTLS).
    var taken = 0
    var tickNumber = 0
    /// EXPUNGE responses seen (a windowed search checks that none came while it ran).
    var expunges = 0
    /// An EXISTS raised the count since IDLE began (an expunge and a delivery together count).
    var grew = false
    /// The text of a BYE, kept for the error when the connection then closes.
    var bye: String?
    /// Set (under the lock) to the step that ran out of time, before the channel is closed.
    let expired = NIOLockedValueBox<String?>(nil)

    init(channel: any Channel, handler: IMAPFrameHandler, inbound: NIOAsyncChannelInboundStream<IMAPInbound>,
         outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, host: String, commandTimeout: TimeAmount,
         maxLiteral: Int, tlsContext: NIOSSLContext, tlsActive: Bool) {
        self.channel = channel
        self.handler = handler
        self.inbound = InboundIterator(inbound.makeAsyncIterator())
        self.outbound = outbound
        self.host = host
        self.commandTimeout = commandTimeout
        self.maxLiteral = maxLiteral
        self.tlsContext = tlsContext
        self.tlsActive = tlsActive
    }

    /// Connects, reads the greeting, starts TLS (implicit or STARTTLS), and runs `body` with the
    /// session; the connection is closed when `body` returns or throws (call `logout()` first
    /// for a clean end).
    ///
    /// - Parameters:
    ///   - host: a name (checked against the certificate and sent as SNI) or an address literal
    ///     (checked against the certificate's IP addresses).
    ///   - tls: the client configuration: trust roots, minimum version. Its verification setting
    ///     is the caller's (`.fullVerification` unless said otherwise).
    ///   - connectTimeout: for the TCP connection.
    ///   - commandTimeout: for each step: the greeting, the handshake, each command's answer.
    ///   - maxLiteral: the largest message `fetchMessage` takes (bytes); larger ones are skipped
    ///     as they stream in and reported as `messageTooLarge`.
    nonisolated(nonsending) public static func connect<T>(host: String, port: Int, security: Security, tls: TLSConfiguration,
                                  connectTimeout: TimeAmount = .seconds(10), commandTimeout: TimeAmount = .seconds(60),
                                  maxLiteral: Int = 64 << 20,
                                  group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                                  _ body: (IMAPClient) async throws -> T) async throws -> T {
        let context: NIOSSLContext
        do { context = try NIOSSLContext(configuration: tls) } catch {
            throw IMAPError(.tls, "the TLS configuration is not usable: \(error)")
        }
        let serverName = Self.serverName(host)
        let limits = IMAPParserLimits(maxLiteral: maxLiteral)
        let handler = IMAPFrameHandler(limits: limits)
        let connection: NIOAsyncChannel<IMAPInbound, ByteBuffer>
        do {
            connection = try await ClientBootstrap(group: group)
                .connectTimeout(connectTimeout)
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if security == .implicitTLS {
                            let tlsHandler = try NIOSSLClientHandler(context: context, serverHostname: serverName)
                            try channel.pipeline.syncOperations.addHandler(tlsHandler)
                        }
                        try channel.pipeline.syncOperations.addHandler(handler)
                        return try NIOAsyncChannel<IMAPInbound, ByteBuffer>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 16)))
                    }
                }
        } catch {
            throw IMAPError(.unreachable, "cannot connect to \(host) port \(port): \(error)")
        }
        let raw = connection.channel
        return try await connection.executeThenClose { inbound, outbound in
            let client = IMAPClient(channel: raw, handler: handler, inbound: inbound, outbound: outbound, host: host,
                                    commandTimeout: commandTimeout, maxLiteral: maxLiteral, tlsContext: context,
                                    tlsActive: security == .implicitTLS)
            try await client.start(security)
            return try await body(client)
        }
    }

    /// The name for SNI and the certificate check: nil for an address literal (NIOSSL then checks
    /// the certificate's IP addresses against the peer's address).
    static func serverName(_ host: String) -> String? {
        (try? SocketAddress(ipAddress: host, port: 0)) == nil ? host : nil
    }

    // MARK: - Session start

    nonisolated(nonsending) func start(_ security: Security) async throws {
        let greeting = try await timed("for the greeting") { try await nextResponse("for the greeting") }
        guard case .untagged(.status(let status)) = greeting else {
            throw IMAPError(.malformed, "the server's first words are not a greeting")
        }
        switch status.status {
        case .bye:
            throw IMAPError(.closed, "the server refused the session: \(IMAPError.printable(status.text))")
        case .preauth:
            guard security == .implicitTLS else {
                throw IMAPError(.noTLS, "the server greeted with PREAUTH before TLS: STARTTLS is not possible (refused)")
            }
            isPreauthenticated = true
        case .ok: break
        default: throw IMAPError(.malformed, "the server greeted with \(status.status.rawValue)")
        }
        if security == .startTLS {
            if capabilities.isEmpty { try await refreshCapabilities() }
            guard capabilities.contains("STARTTLS") else {
                throw IMAPError(.noTLS, "the IMAP server \(host) does not offer STARTTLS (refused: credentials would go in plaintext)")
            }
            try await startTLS()
            capabilities = []
            try await refreshCapabilities()
        }
    }

    /// STARTTLS (RFC 9051 §6.2.1): the OK must be the last plaintext byte; then the handshake.
    nonisolated(nonsending) func startTLS() async throws {
        let status = try await run("STARTTLS")
        guard status.status == .ok else {
            throw IMAPError(.noTLS, "the IMAP server refused STARTTLS: \(IMAPError.printable(status.text))")
        }
        let raw = channel, handler = self.handler, accounted = taken
        let context = tlsContext, serverName = Self.serverName(host)
        let done = raw.eventLoop.makePromise(of: Void.self)
        try await timed("in the TLS handshake") {
            let clean: Bool
            do {
                clean = try await raw.eventLoop.submit {
                    // Every response passed on must have been taken, and no partial one held:
                    // anything else came in plaintext after the OK.
                    guard handler.emitted == accounted, !handler.holdsPartialResponse else { return false }
                    let tls = try NIOSSLClientHandler(context: context, serverHostname: serverName)
                    try raw.pipeline.syncOperations.addHandler(tls, position: .first)
                    try raw.pipeline.syncOperations.addHandler(IMAPHandshakeWatcher(done: done), position: .after(tls))
                    return true
                }.get()
            } catch {
                done.fail(error)
                throw IMAPError(.tls, "TLS could not be started: \(error)")
            }
            guard clean else {
                done.fail(IMAPError(.plaintextAfterSTARTTLS, ""))
                throw IMAPError(.plaintextAfterSTARTTLS, "the server sent data after its OK to STARTTLS, before TLS (refused: it would pass for encrypted)")
            }
            do { try await done.futureResult.get() } catch {
                throw mapped(error, step: "in the TLS handshake")
            }
        }
        tlsActive = true
    }

    nonisolated(nonsending) func refreshCapabilities() async throws {
        let status = try await run("CAPABILITY")
        guard status.status == .ok else { throw rejected("CAPABILITY", status) }
    }

    // MARK: - Commands

    /// Logs in: AUTHENTICATE PLAIN (with the initial response when the server takes SASL-IR),
    /// else LOGIN. Only over TLS. A NO is `loginRefused`.
    nonisolated(nonsending) public func login(user: String, password: String) async throws {
        guard tlsActive else { throw IMAPError(.noTLS, "refused to send the credentials without TLS") }
        try Self.checkArgument(user, "the user name")
        try Self.checkArgument(password, "the password")
        guard !isPreauthenticated else { return }
        let status: IMAPStatusResponse
        if capabilities.contains("AUTH=PLAIN") && !preferLoginCommand {
            let response = Base64.encode([0] + Array(user.utf8) + [0] + Array(password.utf8))
            if capabilities.contains("SASL-IR") {
                status = try await run("AUTHENTICATE PLAIN " + response, step: "to AUTHENTICATE")
            } else {
                status = try await run("AUTHENTICATE PLAIN", step: "to AUTHENTICATE", continuations: [Array((response + "\r\n").utf8)])
            }
        } else if capabilities.contains("LOGINDISABLED") {
            throw IMAPError(.noTLS, "the IMAP server disables LOGIN and offers no AUTH=PLAIN")
        } else {
            var parts: [[UInt8]] = [Array("LOGIN ".utf8)]
            try appendAString(user, to: &parts)
            parts[parts.count - 1] += Array(" ".utf8)
            try appendAString(password, to: &parts)
            parts[parts.count - 1] += [0x0D, 0x0A]
            status = try await run(parts: parts, step: "to LOGIN")
        }
        switch status.status {
        case .ok:
            // Capabilities change at login: take them from the OK, else ask.
            if case .capability = status.code {} else { try await refreshCapabilities() }
        case .no:
            throw IMAPError(.loginRefused, "the IMAP server refused the login for \(IMAPError.printable(user)): \(IMAPError.printable(status.text))",
                            responseCode: status.code)
        default:
            throw rejected("the login", status)
        }
    }

    /// SELECT: the mailbox's UIDVALIDITY (required), UIDNEXT and message count.
    nonisolated(nonsending) public func select(_ mailbox: String) async throws -> MailboxStatus {
        let name = try Self.quotedMailbox(mailbox)
        var uidValidity: UInt32?, uidNext: UInt32?, exists: UInt32?
        let status = try await run("SELECT " + name) { frame in
            switch frame.response {
            case .untagged(.exists(let n)): exists = n
            case .untagged(.status(let s)):
                if case .uidValidity(let v) = s.code { uidValidity = v }
                if case .uidNext(let v) = s.code { uidNext = v }
            default: break
            }
        }
        guard status.status == .ok else { throw rejected("SELECT \(IMAPError.printable(mailbox))", status) }
        guard let uidValidity else { throw IMAPError(.malformed, "the server selected \(IMAPError.printable(mailbox)) without a UIDVALIDITY") }
        messageCount = Int(exists ?? 0)
        return MailboxStatus(uidValidity: uidValidity, uidNext: uidNext, exists: Int(exists ?? 0))
    }

    /// The UIDs from `uid` on in the selected mailbox, ascending. Asked in windows of message
    /// numbers when the mailbox is large, so each answer stays far below the line limit; if a
    /// message is expunged meanwhile (the numbers shift), the search is run again.
    nonisolated(nonsending) public func uidSearch(from uid: UInt32) async throws -> [UInt32] {
        let first = max(uid, 1)
        let window = 4000
        var attempt = 0
        while true {
            attempt += 1
            let expungedBefore = expunges
            var found = Set<UInt32>()
            var low = 1
            var windows = 0
            repeat {
                // A small mailbox is asked at once; the last window is open-ended (messages that
                // came meanwhile are in it).
                let range = messageCount <= window ? "" : low + window > messageCount ? "\(low):* " : "\(low):\(low + window - 1) "
                // No more UIDs than the mailbox holds (and some that came meanwhile): a server
                // that sends SEARCH lines without end cannot fill memory.
                let most = messageCount + 10_000
                var overflow = false
                let status = try await run("UID SEARCH \(range)UID \(first):*") { frame in
                    if case .untagged(.search(let uids)) = frame.response {
                        // `n:*` holds the last message even when its UID is below n: filter.
                        for u in uids where u >= first {
                            if found.count < most { found.insert(u) } else { overflow = true }
                        }
                    }
                }
                guard status.status == .ok else { throw rejected("UID SEARCH", status) }
                if overflow { throw IMAPError(.malformed, "UID SEARCH answered more UIDs than the mailbox's \(messageCount) messages") }
                low += window
                windows += 1
            } while low <= messageCount
            if windows == 1 || expunges == expungedBefore || attempt == 3 { return found.sorted() }
        }
    }

    /// The whole message with this UID (BODY.PEEK[]: the \Seen flag is not set), or nil when it
    /// is gone. A message larger than `maxLiteral` is skipped as it streams and reported as
    /// `messageTooLarge` with its size; the session goes on.
    nonisolated(nonsending) public func fetchMessage(uid: UInt32) async throws -> [UInt8]? {
        var body: [UInt8]?
        var tooLarge: Int?
        let status = try await run("UID FETCH \(uid) (BODY.PEEK[])") { frame in
            guard case .untagged(.fetch(_, let fetch)) = frame.response, fetch.uid == uid else { return }
            if let size = frame.droppedLiterals.max() {
                tooLarge = size
            } else if let bytes = fetch.body {
                body = bytes
            }
        }
        guard status.status == .ok else { throw rejected("UID FETCH \(uid)", status) }
        if let tooLarge {
            throw IMAPError(.messageTooLarge, "the message with UID \(uid) is \(tooLarge) bytes, above the limit of \(maxLiteral) (skipped)", size: tooLarge)
        }
        return body
    }

    /// Adds a flag (`\Seen`, or a keyword such as `$Reported`) to the message: UID STORE with
    /// FLAGS.SILENT.
    nonisolated(nonsending) public func addFlag(uid: UInt32, _ flag: String) async throws {
        try await addFlag(uids: [uid], flag)
    }

    /// The same for many messages in one command (a UID set, ranges joined: `1:40,42`).
    nonisolated(nonsending) public func addFlag(uids: [UInt32], _ flag: String) async throws {
        try Self.checkFlag(flag)
        for set in Self.uidSets(uids) {
            let status = try await run("UID STORE \(set) +FLAGS.SILENT (\(flag))")
            guard status.status == .ok else { throw rejected("UID STORE \(set.prefix(40))", status) }
        }
    }

    /// UID sets (RFC 9051 §9 `sequence-set`) for `uids`, consecutive UIDs as ranges, each set at
    /// most about 1,000 characters so that a command line stays short.
    public static func uidSets(_ uids: [UInt32]) -> [String] {
        var sets: [String] = [], current: [String] = [], length = 0
        var sorted = uids.sorted()[...]
        while let first = sorted.popFirst() {
            var last = first
            while let next = sorted.first, next == last &+ 1 { last = next; sorted.removeFirst() }
            let item = first == last ? "\(first)" : "\(first):\(last)"
            if length + item.utf8.count > 1_000 && !current.isEmpty { sets.append(current.joined(separator: ",")); current = []; length = 0 }
            current.append(item)
            length += item.utf8.count + 1
        }
        if !current.isEmpty { sets.append(current.joined(separator: ",")) }
        return sets
    }

    /// Moves the message to `mailbox`: UID MOVE (RFC 6851) when offered, else UID COPY, \Deleted
    /// and UID EXPUNGE (UIDPLUS) — or, without UIDPLUS, a plain EXPUNGE, which also removes any
    /// other message already marked \Deleted in the selected mailbox.
    nonisolated(nonsending) public func move(uid: UInt32, to mailbox: String) async throws {
        try await move(uids: [uid], to: mailbox)
    }

    /// The same for many messages, a UID set per command.
    nonisolated(nonsending) public func move(uids: [UInt32], to mailbox: String) async throws {
        let name = try Self.quotedMailbox(mailbox)
        for set in Self.uidSets(uids) {
            if capabilities.contains("MOVE") {
                let status = try await run("UID MOVE \(set) \(name)")
                guard status.status == .ok else { throw rejected("UID MOVE \(set.prefix(40)) to \(IMAPError.printable(mailbox))", status) }
                continue
            }
            let copy = try await run("UID COPY \(set) \(name)")
            guard copy.status == .ok else { throw rejected("UID COPY \(set.prefix(40)) to \(IMAPError.printable(mailbox))", copy) }
            let deleted = try await run("UID STORE \(set) +FLAGS.SILENT (\\Deleted)")
            guard deleted.status == .ok else { throw rejected("UID STORE \(set.prefix(40))", deleted) }
            let expunge = try await run(capabilities.contains("UIDPLUS") ? "UID EXPUNGE \(set)" : "EXPUNGE")
            guard expunge.status == .ok else { throw rejected("EXPUNGE", expunge) }
        }
    }

    /// CREATE; a mailbox that already exists (NO [ALREADYEXISTS]) is fine.
    nonisolated(nonsending) public func create(_ mailbox: String) async throws {
        let status = try await run("CREATE " + Self.quotedMailbox(mailbox))
        guard status.status == .ok || (status.status == .no && status.code == .alreadyExists) else {
            throw rejected("CREATE \(IMAPError.printable(mailbox))", status)
        }
    }

    /// IDLE (RFC 2177) until new mail or `deadline`, then DONE. Keep each IDLE under 29 minutes
    /// (servers may drop an idle client after 30) and issue it again.
    nonisolated(nonsending) public func idle(until deadline: NIODeadline) async throws -> IdleResult {
        guard capabilities.contains("IDLE") else { throw IMAPError(.unsupported, "the IMAP server does not offer IDLE") }
        guard deadline > .now() else { return .timedOut }
        let tag = nextTag()
        grew = false
        var result = IdleResult.timedOut
        var ended: IMAPStatusResponse?
        // Wait for the server's "+" (new mail may come first).
        try await timed("to IDLE") {
            try await write(Array("\(tag) IDLE\r\n".utf8))
            while true {
                let response = try await nextResponse("to IDLE")
                if case .continuation = response { return }
                if case .tagged(let t, let status) = response {
                    guard t == tag else { throw wrongTag(t, tag) }
                    ended = status
                    return
                }
                if grew { result = .newMail }
            }
        }
        if let ended { throw rejected("IDLE", ended) }
        if result == .timedOut {
            tickNumber += 1
            let id = tickNumber, handler = self.handler
            let timer = channel.eventLoop.scheduleTask(deadline: deadline) { handler.tick(id) }
            defer { timer.cancel() }
            waiting: while true {
                guard let item = try await nextInbound("in IDLE") else { throw closedError("in IDLE") }
                switch item {
                case .tick(let t):
                    if t == id { break waiting }
                case .frame(let frame):
                    taken += 1
                    if case .tagged(let t, let status) = frame.response {
                        // The server ended IDLE on its own.
                        guard t == tag else { throw wrongTag(t, tag) }
                        guard status.status == .ok else { throw rejected("IDLE", status) }
                        note(frame.response)
                        return grew ? .newMail : .timedOut
                    }
                    note(frame.response)
                    if grew {
                        result = .newMail
                        break waiting
                    }
                }
            }
        }
        let status = try await timed("to DONE") {
            try await write(Array("DONE\r\n".utf8))
            return try await awaitTagged(tag, step: "to DONE")
        }
        guard status.status == .ok else { throw rejected("IDLE", status) }
        return result
    }

    /// LOGOUT; the server's BYE and a close are the expected end.
    nonisolated(nonsending) public func logout() async throws {
        do {
            let status = try await run("LOGOUT")
            guard status.status == .ok else { throw rejected("LOGOUT", status) }
        } catch let error as IMAPError where error.code == .closed && bye != nil {
            return
        }
    }

    // MARK: - Running a command

    func nextTag() -> String {
        tagNumber += 1
        let digits = String(tagNumber)
        return "A" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// Writes `line` with a new tag and reads up to its tagged answer. `continuations` are sent
    /// one per "+" the server sends (a NO/BAD instead ends the command).
    nonisolated(nonsending) func run(_ line: String, step: String? = nil, continuations: [[UInt8]] = [],
             frames: ((IMAPResponseStream.Frame) -> Void)? = nil) async throws -> IMAPStatusResponse {
        try Self.checkArgument(line, "the command")
        return try await run(parts: [Array((line + "\r\n").utf8)] + continuations, step: step, frames: frames)
    }

    /// A command in parts, each with its own line end or literal header: the first is written
    /// with a new tag, each next one when the server sends "+" (to a synchronising literal or
    /// an AUTHENTICATE). Untagged responses are noted and handed to `frames`.
    nonisolated(nonsending) func run(parts: [[UInt8]], step: String? = nil,
             frames: ((IMAPResponseStream.Frame) -> Void)? = nil) async throws -> IMAPStatusResponse {
        let tag = nextTag()
        let verb = String(decoding: parts.first?.prefix { $0 != 0x20 && $0 != 0x0D } ?? [], as: UTF8.self)
        let step = step ?? "to \(verb)"
        return try await timed(step) {
            var pending = parts.dropFirst()
            try await write(Array("\(tag) ".utf8) + (parts.first ?? []))
            while true {
                guard let item = try await nextInbound(step) else { throw closedError(step) }
                guard case .frame(let frame) = item else { continue }  // a stale IDLE tick
                taken += 1
                note(frame.response)
                switch frame.response {
                case .tagged(let t, let status):
                    guard t == tag else { throw wrongTag(t, tag) }
                    return status
                case .continuation:
                    guard let next = pending.popFirst() else {
                        throw IMAPError(.malformed, "the IMAP server sent '+' \(step) when nothing more was to be sent")
                    }
                    try await write(next)
                case .untagged:
                    frames?(frame)
                }
            }
        }
    }

    /// Reads to the tagged answer `tag` (the command is already written).
    nonisolated(nonsending) func awaitTagged(_ tag: String, step: String) async throws -> IMAPStatusResponse {
        while true {
            let response = try await nextResponse(step)
            switch response {
            case .tagged(let t, let status):
                guard t == tag else { throw wrongTag(t, tag) }
                return status
            case .continuation:
                throw IMAPError(.malformed, "the IMAP server sent '+' \(step)")
            case .untagged:
                continue
            }
        }
    }

    /// The next response (untagged ones are noted: capabilities, counts, BYE).
    nonisolated(nonsending) func nextResponse(_ step: String) async throws -> IMAPResponse {
        while true {
            guard let item = try await nextInbound(step) else { throw closedError(step) }
            guard case .frame(let frame) = item else { continue }
            taken += 1
            note(frame.response)
            return frame.response
        }
    }

    /// The next item from the channel; a cancelled task gets `CancellationError` (the stream
    /// ends when its reader is cancelled, and the session with it).
    nonisolated(nonsending) func nextInbound(_ step: String) async throws -> IMAPInbound? {
        let item: IMAPInbound?
        do { item = try await inbound.next() } catch {
            if Task.isCancelled { throw CancellationError() }
            throw mapped(error, step: step)
        }
        if item == nil, Task.isCancelled { throw CancellationError() }
        return item
    }

    /// Keeps what untagged responses and codes say about the session.
    func note(_ response: IMAPResponse) {
        if case .untagged(.status(let status)) = response, status.code == .alert, alerts.count < 20 {
            alerts.append(IMAPError.printable(status.text))
        }
        if case .tagged(_, let status) = response, status.code == .alert, alerts.count < 20 {
            alerts.append(IMAPError.printable(status.text))
        }
        switch response {
        case .untagged(.capability(let list)): capabilities = Set(list.map { $0.uppercased() })
        case .untagged(.exists(let n)):
            if Int(n) > messageCount { grew = true }
            messageCount = Int(n)
        case .untagged(.expunge):
            messageCount = max(0, messageCount - 1)
            expunges += 1
        case .untagged(.status(let status)):
            if status.status == .bye { bye = status.text }
            if case .capability(let list) = status.code { capabilities = Set(list.map { $0.uppercased() }) }
        case .tagged(_, let status):
            if case .capability(let list) = status.code { capabilities = Set(list.map { $0.uppercased() }) }
        default: break
        }
    }

    nonisolated(nonsending) func write(_ bytes: [UInt8]) async throws {
        do { try await outbound.write(ByteBuffer(bytes: bytes)) } catch {
            throw mapped(error, step: "while writing")
        }
    }

    /// Runs `work` under the command time limit: when it runs out, the connection is closed and
    /// the step reported as timed out.
    nonisolated(nonsending) func timed<T>(_ step: String, _ work: () async throws -> T) async throws -> T {
        let raw = channel, expired = self.expired
        let timer = raw.eventLoop.scheduleTask(in: commandTimeout) {
            expired.withLockedValue { $0 = $0 ?? step }
            raw.close(promise: nil)
        }
        defer { timer.cancel() }
        do { return try await work() } catch {
            if let step = expired.withLockedValue({ $0 }) { throw IMAPError(.timeout, "no answer from the IMAP server \(step) in time") }
            throw error
        }
    }

    func mapped(_ error: any Error, step: String) -> IMAPError {
        if let step = expired.withLockedValue({ $0 }) { return IMAPError(.timeout, "no answer from the IMAP server \(step) in time") }
        switch error {
        case let error as IMAPError: return error
        case let error as IMAPProtocolError: return IMAPError(.malformed, "the IMAP server sent a malformed response \(step): \(error)")
        case is NIOSSLError, is NIOSSLExtraError, is BoringSSLError:
            return IMAPError(.tls, "TLS with \(host) failed \(step): \(error)")
        default:
            if error is ChannelError { return closedError(step) }
            return IMAPError(.closed, "the connection to \(host) failed \(step): \(error)")
        }
    }

    func closedError(_ step: String) -> IMAPError {
        if let bye { return IMAPError(.closed, "the IMAP server closed the connection \(step): \(IMAPError.printable(bye))") }
        return IMAPError(.closed, "the IMAP server closed the connection \(step)")
    }

    func wrongTag(_ got: String, _ want: String) -> IMAPError {
        IMAPError(.malformed, "the IMAP server answered \(IMAPError.printable(got)) while \(want) was awaited")
    }

    func rejected(_ what: String, _ status: IMAPStatusResponse) -> IMAPError {
        IMAPError(.rejected, "the IMAP server answered \(what) with \(status.status.rawValue): \(IMAPError.printable(status.text))",
                  responseCode: status.code)
    }

    // MARK: - Arguments

    /// Refuses CR, LF and NUL, which would end the command early or smuggle another one.
    static func checkArgument(_ value: String, _ what: String) throws {
        guard !value.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }) else {
            throw IMAPError(.unsafeArgument, "refused to send \(what): it holds CR, LF or NUL")
        }
    }

    /// A flag is `\Name` or a keyword: atom characters only.
    static func checkFlag(_ flag: String) throws {
        try checkArgument(flag, "the flag")
        let body = flag.hasPrefix("\\") ? flag.utf8.dropFirst() : flag.utf8[...]
        let ok = !body.isEmpty && body.allSatisfy { c in
            c > 0x20 && c < 0x7F && !"(){%*\"\\]".utf8.contains(c)
        }
        guard ok else { throw IMAPError(.unsafeArgument, "refused the flag \(IMAPError.printable(flag)): not an IMAP flag") }
    }

    /// The mailbox name as a quoted string, in modified UTF-7 (RFC 3501 §5.1.3).
    static func quotedMailbox(_ mailbox: String) throws -> String {
        try checkArgument(mailbox, "the mailbox name")
        guard !mailbox.isEmpty else { throw IMAPError(.unsafeArgument, "refused an empty mailbox name") }
        return quoted(ModifiedUTF7.encode(mailbox))
    }

    /// `"…"` with `\` and `"` escaped (the text is printable ASCII).
    static func quoted(_ text: String) -> String {
        var out = "\""
        for c in text.unicodeScalars {
            if c == "\\" || c == "\"" { out.append("\\") }
            out.unicodeScalars.append(c)
        }
        return out + "\""
    }

    /// Appends an astring: quoted when printable ASCII, else a literal (`{n+}` with LITERAL+,
    /// else a synchronising `{n}`: the next part waits for the server's "+").
    func appendAString(_ value: String, to parts: inout [[UInt8]]) throws {
        let bytes = Array(value.utf8)
        if bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            parts[parts.count - 1] += Array(Self.quoted(value).utf8)
        } else if capabilities.contains("LITERAL+") {
            parts[parts.count - 1] += Array("{\(bytes.count)+}\r\n".utf8) + bytes
        } else {
            parts[parts.count - 1] += Array("{\(bytes.count)}\r\n".utf8)
            parts.append(bytes)
        }
    }
}

/// The channel's inbound iterator, in a box so the client's methods can run on the caller's
/// isolation (`nonisolated(nonsending)`) and still await NIO's iterator. Unchecked: only the
/// client uses it, one call at a time (the client is not Sendable).
final class InboundIterator: @unchecked Sendable {
    private var iterator: NIOAsyncChannelInboundStream<IMAPInbound>.AsyncIterator

    init(_ iterator: NIOAsyncChannelInboundStream<IMAPInbound>.AsyncIterator) {
        self.iterator = iterator
    }

    func next() async throws -> IMAPInbound? {
        try await iterator.next()
    }
}

/// Base64 with padding (RFC 4648 §4), for SASL.
enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8], alphabet: [UInt8] = alphabet, pad: Bool = true) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = bytes[i], b1 = i + 1 < bytes.count ? bytes[i + 1] : 0, b2 = i + 2 < bytes.count ? bytes[i + 2] : 0
            let n = (UInt32(b0) << 16) | (UInt32(b1) << 8) | UInt32(b2)
            let chars = min(4, (bytes.count - i) * 4 / 3 + ((bytes.count - i) < 3 ? 1 : 0))
            for k in 0..<4 {
                if k < chars {
                    out.append(alphabet[Int((n >> UInt32(18 - 6 * k)) & 63)])
                } else if pad {
                    out.append(UInt8(ascii: "="))
                }
            }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// IMAP's modified UTF-7 for mailbox names (RFC 3501 §5.1.3): printable ASCII as is (`&` as
/// `&-`), anything else as `&` + base64 of UTF-16 (`,` for `/`, no padding) + `-`.
enum ModifiedUTF7 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,".utf8)

    static func encode(_ name: String) -> String {
        var out = ""
        var pending: [UInt8] = []
        func flush() {
            guard !pending.isEmpty else { return }
            out += "&" + Base64.encode(pending, alphabet: alphabet, pad: false) + "-"
            pending = []
        }
        for scalar in name.unicodeScalars {
            if scalar.value >= 0x20 && scalar.value < 0x7F {
                flush()
                out += scalar == "&" ? "&-" : String(scalar)
            } else {
                for unit in String(scalar).utf16 { pending += [UInt8(unit >> 8), UInt8(unit & 0xFF)] }
            }
        }
        flush()
        return out
    }
}

extension IMAPURL {
    /// The client's security for the URL's scheme.
    public var security: IMAPClient.Security { implicitTLS ? .implicitTLS : .startTLS }
}
