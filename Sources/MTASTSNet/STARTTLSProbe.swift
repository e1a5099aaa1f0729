import Foundation
import MTASTSCore
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// What an MX said and showed: banner, EHLO extensions, STARTTLS, TLS version, certificate, and
/// the RFC 8460 result type when something fails (RFC 8461 §4).
public struct ProbeResult: Sendable {
    public var banner: String?
    public var extensions: [String] = []
    public var starttlsOffered = false
    public var tlsVersion: String?
    public var certificate: PeerCertificate?
    public var certificateVerdict: CertificateVerdict?
    /// `starttls-not-supported`, a certificate type, or `validation-failure` for a failed handshake;
    /// nil when STARTTLS and the certificate are fine.
    public var failure: (type: ResultType, reason: String)?
    /// The server could not be reached or did not answer in time (not a TLS verdict: transient).
    public var unreachable: String?
    public var elapsed: Duration = .zero
}

/// Connects to an MX, reads the banner, says EHLO, asks for STARTTLS, does the handshake with SNI
/// set to the MX name and checks the certificate; each step has its own time limit, so a server
/// that stalls (a tarpit) is cut off.
public struct STARTTLSProbe: Sendable {
    public var checker: CertificateChecker
    public var port: Int
    public var stepTimeout: TimeAmount
    public var ehloName: String
    public var group: any EventLoopGroup

    public init(checker: CertificateChecker, port: Int = 25, stepTimeout: TimeAmount = .seconds(20), ehloName: String = "mtasts.invalid", group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.checker = checker
        self.port = port
        self.stepTimeout = stepTimeout
        self.ehloName = ehloName
        self.group = group
    }

    public func probe(mx host: String, address: String) async -> ProbeResult {
        let start = ContinuousClock.now
        let record = VerificationRecord()
        let state = ProbeState()
        let promise = group.next().makePromise(of: Void.self)
        var result = ProbeResult()
        do {
            let tls = try TLSSetup.clientHandler(host: host, checker: checker, record: record, strict: false)
            let handler = SMTPProbeHandler(ehloName: ehloName, tls: tls, state: state, promise: promise, stepTimeout: stepTimeout)
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(stepTimeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineDecoder()))
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: address, port: port).get()
            defer { channel.close(promise: nil) }
            try await promise.futureResult.get()
        } catch {
            promise.fail(error)  // a failed connect never reached the handler: the promise must not leak
            if let e = error as? ProbeError {
                switch e {
                case .timeout(let step): result.unreachable = "no answer within \(stepTimeout.nanoseconds / 1_000_000_000) s \(step)"
                case .reply(let step, let line): result.unreachable = "the server answered \(step) with '\(line.prefix(200))'"
                case .closed(let step): result.unreachable = "the server closed the connection \(step)"
                case .lineTooLong: result.unreachable = "the server sent a line longer than 4096 bytes"
                case .noSTARTTLS: result.failure = (.starttlsNotSupported, "the server does not offer STARTTLS")
                case .starttlsRefused(let line): result.failure = (.starttlsNotSupported, "the server refused STARTTLS: '\(line.prefix(200))'")
                }
            } else if state.handshaking {
                result.failure = (.validationFailure, "the TLS handshake failed: \(error)")
            } else {
                result.unreachable = PolicyFetcher.describe(error, host: host, address: address, port: port)
            }
        }
        result.banner = state.banner
        result.extensions = state.extensions
        result.starttlsOffered = state.extensions.contains { $0.uppercased() == "STARTTLS" }
        result.tlsVersion = state.tlsVersion
        result.certificate = record.peer
        result.certificateVerdict = record.verdict
        if result.failure == nil, case .invalid(let type, let why)? = record.verdict {
            result.failure = (type, why)
        }
        result.elapsed = ContinuousClock.now - start
        return result
    }
}

enum ProbeError: Error {
    case timeout(String)
    case reply(String, String)
    case closed(String)
    case lineTooLong
    case noSTARTTLS
    case starttlsRefused(String)
}

final class ProbeState: @unchecked Sendable {
    var banner: String?
    var extensions: [String] = []
    var tlsVersion: String?
    var handshaking = false
}

/// Lines ending in LF (CR stripped), at most 4096 bytes.
struct LineDecoder: ByteToMessageDecoder {
    typealias InboundOut = String
    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let lf = buffer.readableBytesView.firstIndex(of: 0x0A) else {
            if buffer.readableBytes > 4096 { throw ProbeError.lineTooLong }
            return .needMoreData
        }
        let length = lf - buffer.readerIndex
        guard length <= 4096, var line = buffer.readString(length: length) else { throw ProbeError.lineTooLong }
        buffer.moveReaderIndex(forwardBy: 1)
        if line.hasSuffix("\r") { line.removeLast() }
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }
    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState { .needMoreData }
}

final class SMTPProbeHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = String
    typealias OutboundOut = ByteBuffer

    enum Step: String {
        case banner = "to the connection (banner)"
        case ehlo = "to EHLO"
        case starttls = "to STARTTLS"
        case handshake = "in the TLS handshake"
        case done = "after the handshake"
    }

    let ehloName: String
    let tls: NIOSSLClientHandler
    let state: ProbeState
    let promise: EventLoopPromise<Void>
    let stepTimeout: TimeAmount
    var step = Step.banner
    var timer: Scheduled<Void>?
    var finished = false
    var lines: [String] = []

    init(ehloName: String, tls: NIOSSLClientHandler, state: ProbeState, promise: EventLoopPromise<Void>, stepTimeout: TimeAmount) {
        self.ehloName = ehloName
        self.tls = tls
        self.state = state
        self.promise = promise
        self.stepTimeout = stepTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) { arm(context) }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        let step = self.step
        let ctx = context
        timer = context.eventLoop.scheduleTask(in: stepTimeout) { [self] in
            self.finish(ctx, .failure(ProbeError.timeout(step.rawValue)))
        }
    }

    private func send(_ context: ChannelHandlerContext, _ line: String) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: line + "\r\n")), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = unwrapInboundIn(data)
        lines.append(line)
        // A multi-line reply continues while the fourth character is '-'.
        if line.count >= 4, line[line.index(line.startIndex, offsetBy: 3)] == "-" { return }
        let reply = lines
        lines.removeAll()
        let code = Int(line.prefix(3)) ?? 0
        switch step {
        case .banner:
            state.banner = reply.map { String($0.dropFirst(4)) }.joined(separator: " ")
            guard code == 220 else { return finish(context, .failure(ProbeError.reply("to the connection", line))) }
            step = .ehlo
            arm(context)
            send(context, "EHLO \(ehloName)")
        case .ehlo:
            guard code == 250 else { return finish(context, .failure(ProbeError.reply("to EHLO", line))) }
            state.extensions = reply.dropFirst().map { String($0.dropFirst(4)) }
            guard state.extensions.contains(where: { $0.uppercased() == "STARTTLS" }) else {
                return finish(context, .failure(ProbeError.noSTARTTLS))
            }
            step = .starttls
            arm(context)
            send(context, "STARTTLS")
        case .starttls:
            guard code == 220 else { return finish(context, .failure(ProbeError.starttlsRefused(line))) }
            step = .handshake
            state.handshaking = true
            arm(context)
            do {
                try context.pipeline.syncOperations.addHandler(tls, position: .first)
            } catch {
                finish(context, .failure(error))
            }
        case .handshake, .done:
            break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            state.tlsVersion = TLSSetup.describe(tls.tlsVersion)
            step = .done
            send(context, "QUIT")
            finish(context, .success(()))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(context, .failure(ProbeError.closed(step.rawValue)))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(context, .failure(error))
    }

    private func finish(_ context: ChannelHandlerContext, _ result: Result<Void, any Error>) {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        promise.completeWith(result)
        context.close(promise: nil)
    }
}
