import MTASTSCore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// The one SMTP client: a conversation of commands and replies over one connection, used by the
/// STARTTLS probe of `mtasts check` (an MX on port 25) and by report submission (RFC 6409).
///
/// Every reply has its own time limit (a server that stalls is cut off, whatever the step), and
/// the whole conversation may have a deadline too. Replies are bounded: a line of at most 4,096
/// bytes, at most 128 lines. A command is written only when it holds no CR, LF or NUL, whatever
/// it was built from (DNS, configuration, report data): nothing can smuggle a second command.
public final class SMTPConversation {
    public enum Failure: Error, CustomStringConvertible, Equatable, Sendable {
        /// No answer within the step's time limit (`step`: "to EHLO", "in the TLS handshake").
        case timeout(String)
        /// The server closed the connection while an answer was awaited.
        case closed(String)
        /// The server answered with a code outside what the step expects.
        case reply(step: String, code: Int, text: String)
        /// What came back is not an SMTP reply (too long, too many lines, no code).
        case malformed(String)
        /// A command would have held CR, LF or NUL: refused before anything was written.
        case unsafeCommand(String)
        /// TLS could not be started on this connection (the client handler could not be made or
        /// installed: a server name NIOSSL refuses, a connection already closed).
        case tlsSetup(String)
        /// Bytes followed the server's 220 to STARTTLS before the handshake: they would be read as
        /// if they had come over TLS (a STARTTLS command injection); the conversation is refused.
        case plaintextAfterSTARTTLS

        public var description: String {
            switch self {
            case .timeout(let step): return "no answer \(step) in time"
            case .closed(let step): return "the server closed the connection \(step)"
            case .reply(let step, let code, let text): return "the server answered \(step) with \(code) \(text.prefix(200))"
            case .malformed(let what): return what
            case .unsafeCommand(let verb): return "refused to send \(verb): the command holds CR, LF or NUL"
            case .tlsSetup(let why): return "TLS could not be started: \(why)"
            case .plaintextAfterSTARTTLS: return "the server sent data after its 220 to STARTTLS, before TLS (refused: it would pass for encrypted)"
            }
        }
    }

    public struct Reply: Sendable, Equatable {
        public var code: Int
        /// The text of each line, without the code and separator.
        public var lines: [String]
        public var text: String { lines.joined(separator: " ") }
    }

    public static let maxLineLength = 4096
    public static let maxReplyLines = 128

    let channel: any Channel
    /// Counts the bytes that reach the conversation (on the event loop), so that plaintext queued
    /// behind the 220 to STARTTLS can be told apart from what comes over TLS.
    let counter: ByteCounter
    /// Bytes taken from `inbound` so far.
    var consumed = 0
    var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let stepTimeout: TimeAmount
    /// Set (under the lock) to the step that ran out of time, before the channel is closed.
    let expired = NIOLockedValueBox<String?>(nil)
    var pending: [UInt8] = []

    init(channel: any Channel, counter: ByteCounter, inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, stepTimeout: TimeAmount) {
        self.channel = channel
        self.counter = counter
        self.inbound = inbound.makeAsyncIterator()
        self.outbound = outbound
        self.stepTimeout = stepTimeout
    }

    /// Connects to `host` (a name or an address literal) and runs `body`; the connection is closed
    /// when it returns or throws. `implicitTLS` makes the TLS client handler for port 465 style
    /// submission; `deadline` bounds the whole conversation.
    public static func run<T>(host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                              stepTimeout: TimeAmount, deadline: TimeAmount? = nil,
                              implicitTLS: (@Sendable () throws -> NIOSSLClientHandler)? = nil,
                              _ body: (SMTPConversation) async throws -> T) async throws -> T {
        let counter = ByteCounter()
        let connection = try await ClientBootstrap(group: group)
            .connectTimeout(stepTimeout)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let implicitTLS { try channel.pipeline.syncOperations.addHandler(try implicitTLS()) }
                    try channel.pipeline.syncOperations.addHandler(counter)
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let raw = connection.channel
        return try await connection.executeThenClose { inbound, outbound in
            let conversation = SMTPConversation(channel: raw, counter: counter, inbound: inbound, outbound: outbound, stepTimeout: stepTimeout)
            let overall = deadline.map { amount in
                raw.eventLoop.scheduleTask(in: amount) { [expired = conversation.expired] in
                    expired.withLockedValue { $0 = $0 ?? "before the conversation's deadline" }
                    raw.close(promise: nil)
                }
            }
            defer { overall?.cancel() }
            return try await body(conversation)
        }
    }

    /// Runs `work` under the step's time limit: when it runs out, the connection is closed and
    /// the step reported as timed out.
    func timed<T>(_ step: String, _ work: () async throws -> T) async throws -> T {
        let raw = channel, expired = self.expired
        let timer = raw.eventLoop.scheduleTask(in: stepTimeout) {
            expired.withLockedValue { $0 = $0 ?? step }
            raw.close(promise: nil)
        }
        defer { timer.cancel() }
        do { return try await work() } catch {
            if let step = expired.withLockedValue({ $0 }) { throw Failure.timeout(step) }
            throw error
        }
    }

    /// The next reply (all lines of a multi-line one).
    public func reply(step: String) async throws -> Reply {
        try await timed(step) { try await readReply(step) }
    }

    /// Writes `line` (checked), then reads the reply; with `expect`, a code outside it throws
    /// `Failure.reply`.
    @discardableResult
    public func command(_ line: String, expect: ClosedRange<Int>? = nil) async throws -> Reply {
        let step = "to " + (line.split(separator: " ", maxSplits: 1).first.map { String($0.prefix(16)) } ?? "the command")
        guard !breaksLine(line) else {
            throw Failure.unsafeCommand(step.dropFirst(3).description)
        }
        let reply = try await timed(step) {
            try await outbound.write(ByteBuffer(string: line + "\r\n"))
            return try await readReply(step)
        }
        if let expect, !expect.contains(reply.code) { throw Failure.reply(step: step, code: reply.code, text: reply.text) }
        return reply
    }

    /// Writes a command without waiting for its reply (QUIT on the way out).
    public func send(_ line: String) async {
        guard !breaksLine(line) else { return }
        try? await outbound.write(ByteBuffer(string: line + "\r\n"))
    }

    /// The message after DATA's 354: line ends made CRLF, leading dots doubled, then ".".
    public func data(_ message: [UInt8], expect: ClosedRange<Int> = 250...250) async throws -> Reply {
        let reply = try await timed("to the message") {
            try await outbound.write(ByteBuffer(bytes: Self.dotStuffed(message) + Array(".\r\n".utf8)))
            return try await readReply("to the message")
        }
        if !expect.contains(reply.code) { throw Failure.reply(step: "to the message", code: reply.code, text: reply.text) }
        return reply
    }

    /// Starts TLS after the server's 220 to STARTTLS: the handler goes first in the pipeline and
    /// the handshake must finish within the step's time. Answers the negotiated version.
    public func startTLS(_ makeHandler: @escaping @Sendable () throws -> NIOSSLClientHandler) async throws -> String? {
        let step = "in the TLS handshake"
        let raw = channel, counter = self.counter
        // Every byte read so far belongs to replies already taken: anything left over, or already
        // received but not yet read, came in plaintext after the 220.
        guard pending.isEmpty else { throw Failure.plaintextAfterSTARTTLS }
        let accounted = consumed
        let done = raw.eventLoop.makePromise(of: String?.self)
        return try await timed(step) {
            let seen: Int
            do {
                seen = try await raw.eventLoop.submit {
                    let seen = counter.count
                    let tls = try makeHandler()
                    try raw.pipeline.syncOperations.addHandler(tls, position: .first)
                    try raw.pipeline.syncOperations.addHandler(HandshakeWatcher(tls: tls, done: done), position: .after(tls))
                    return seen
                }.get()
            } catch {
                done.fail(error)  // never left open (NIO traps on a leaked promise)
                throw Failure.tlsSetup("\(error)")
            }
            guard seen == accounted else {
                done.fail(Failure.plaintextAfterSTARTTLS)
                throw Failure.plaintextAfterSTARTTLS
            }
            return try await done.futureResult.get()
        }
    }

    func readReply(_ step: String) async throws -> Reply {
        var lines: [String] = []
        while true {
            let line = try await readLine(step)
            let bytes = Array(line.utf8)
            guard bytes.count >= 3, bytes[0...2].allSatisfy({ (0x30...0x39).contains($0) }), bytes.count == 3 || bytes[3] == 0x20 || bytes[3] == 0x2D else {
                throw Failure.malformed("not an SMTP reply \(step): '\(line.prefix(100))'")
            }
            lines.append(String(line.dropFirst(4)))
            guard lines.count <= Self.maxReplyLines else { throw Failure.malformed("a reply of more than \(Self.maxReplyLines) lines \(step)") }
            if bytes.count == 3 || bytes[3] == 0x20 { return Reply(code: Int(line.prefix(3)) ?? 0, lines: lines) }
        }
    }

    func readLine(_ step: String) async throws -> String {
        while true {
            if let lf = pending.firstIndex(of: 0x0A) {
                var line = Array(pending[..<lf])
                pending.removeSubrange(...lf)
                if line.last == 0x0D { line.removeLast() }
                guard line.count <= Self.maxLineLength else { break }
                // Control characters (a hostile server's terminal escapes) never reach logs or output.
                for i in line.indices where (line[i] < 0x20 && line[i] != 0x09) || line[i] == 0x7F { line[i] = 0x3F }
                return String(decoding: line, as: UTF8.self)
            }
            guard pending.count <= Self.maxLineLength else { break }
            let next: ByteBuffer?
            do { next = try await inbound.next() } catch {
                if expired.withLockedValue({ $0 }) == nil, error is ChannelError { throw Failure.closed(step) }
                throw error
            }
            guard var buffer = next else { throw Failure.closed(step) }
            consumed += buffer.readableBytes
            pending += buffer.readBytes(length: buffer.readableBytes) ?? []
        }
        throw Failure.malformed("the server sent a line longer than \(Self.maxLineLength) bytes \(step)")
    }

    /// CRLF line ends, leading dots doubled, ending with CRLF (the "." line follows).
    public static func dotStuffed(_ message: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(message.count + 64)
        var atLineStart = true
        var previous: UInt8 = 0
        for b in message {
            if b == 0x0A && previous != 0x0D { out.append(0x0D) }
            if atLineStart && b == UInt8(ascii: ".") { out.append(b) }
            out.append(b)
            atLineStart = b == 0x0A
            previous = b
        }
        if !atLineStart { out += [0x0D, 0x0A] }
        return out
    }
}

/// Completes `done` with the TLS version when the handshake finishes, or fails it.
final class HandshakeWatcher: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    let tls: NIOSSLClientHandler
    let done: EventLoopPromise<String?>

    init(tls: NIOSSLClientHandler, done: EventLoopPromise<String?>) {
        self.tls = tls
        self.done = done
    }

    var finished = false

    func complete(_ result: Result<String?, any Error>) {
        guard !finished else { return }
        finished = true
        done.completeWith(result)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { complete(.success(TLSSetup.describe(tls.tlsVersion))) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        complete(.failure(error))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        complete(.failure(SMTPConversation.Failure.closed("in the TLS handshake")))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        complete(.failure(SMTPConversation.Failure.closed("in the TLS handshake")))
    }
}

/// Counts inbound bytes (on the event loop) and passes them on.
final class ByteCounter: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    var count = 0
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        count += unwrapInboundIn(data).readableBytes
        context.fireChannelRead(data)
    }
}
