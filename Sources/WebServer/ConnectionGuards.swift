import HTTPTypes
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes
import NIOSSL
import NIOTLS

/// Time limits of one HTTP connection, beside Hummingbird's idle time-out (which applies between
/// requests): the TLS handshake, the first request's head, and each request's body.
public struct ConnectionLimits: Sendable {
    /// Connections served at once; more wait in the listen backlog until one closes.
    public var maxConnections = 1_024
    /// Idle keep-alive connections are closed after this.
    public var idleTimeout: TimeAmount = .seconds(30)
    /// The request head (line and headers) must be complete within this of the connection's start:
    /// a client that trickles its headers (slow loris) is cut off.
    public var headerTimeout: TimeAmount = .seconds(10)
    /// A request's body must arrive within this of its head.
    public var bodyTimeout: TimeAmount = .seconds(30)
    /// TLS handshakes must complete within this.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// Connections at once from one address (one client cannot take every slot).
    public var maxPerAddress = 64
    /// Connections the kernel completes and queues while all slots are taken (capped by
    /// net.core.somaxconn); beyond it a client's SYN is dropped and retried after seconds.
    public var backlog = 1_024

    public init() {}
}

/// Closes the connection when the first request head or a request body takes too long. Placed
/// after the HTTP decoder, so it sees whole heads; the deadline of the first head starts when the
/// handler is added (the connection's start); later heads fall under the idle time-out.
final class RequestDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let headerTimeout: TimeAmount
    let bodyTimeout: TimeAmount
    let logger: Logger
    private var timer: Scheduled<Void>?
    /// The response being written says `Connection: close` (a 413 sent before the body was read).
    private var closeAfterResponse = false
    /// Per request read and not yet answered: whether it asked for `Connection: close`. After its
    /// response the connection is closed, whatever else the client pipelined behind it.
    private var requestsClose: [Bool] = []
    /// A client that does not read its responses gets `bodyTimeout` before the connection goes.
    private var stalledWriter: Scheduled<Void>?

    init(headerTimeout: TimeAmount, bodyTimeout: TimeAmount, logger: Logger) {
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        arm(context, headerTimeout, "no complete request head")
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        stalledWriter?.cancel()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        stalledWriter?.cancel()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            stalledWriter?.cancel()
            stalledWriter = nil
        } else if stalledWriter == nil {
            let channel = context.channel
            stalledWriter = context.eventLoop.scheduleTask(in: bodyTimeout) { channel.close(promise: nil) }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            requestsClose.append(head.headerFields[.connection].map { $0.lowercased().contains("close") } ?? false)
            arm(context, bodyTimeout, "request body not complete")
        case .body:
            break
        case .end:
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            if head.headerFields[.connection]?.lowercased() == "close" { closeAfterResponse = true }
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            let asked = requestsClose.isEmpty ? false : requestsClose.removeFirst()
            guard closeAfterResponse || asked else { return context.write(data, promise: promise) }
            let channel = context.channel, early = closeAfterResponse
            let done = context.eventLoop.makePromise(of: Void.self)
            // Answered before the body was read (413): close our side only, so the client reads the
            // answer instead of a reset; the rest of its upload is discarded until the body deadline.
            done.futureResult.whenComplete { _ in channel.close(mode: early ? .output : .all, promise: nil) }
            if let promise { done.futureResult.cascade(to: promise) }
            context.writeAndFlush(data, promise: done)
        }
    }

    private func arm(_ context: ChannelHandlerContext, _ after: TimeAmount, _ why: String) {
        timer?.cancel()
        let channel = context.channel, logger = self.logger
        timer = context.eventLoop.scheduleTask(in: after) {
            logger.debug("closing a connection: \(why) within \(after.nanoseconds / 1_000_000) ms", metadata: ["peer": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"])
            channel.close(promise: nil)
        }
    }
}

/// Closes a connection whose TLS handshake has not completed in time.
final class HandshakeDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) { timer?.cancel() }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        if case TLSUserEvent.handshakeCompleted = event {
            timer?.cancel()
            timer = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}

/// HTTP/1 with the connection's time limits, and TLS (certificate by SNI, handshake deadline)
/// when a context is given.
struct GuardedHTTPChannel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = HTTP1Channel.Value
    let base: HTTP1Channel
    let sslContext: NIOSSLContext?
    let handshakeTimeout: TimeAmount
    let perAddress: PerAddressLimit

    var responder: HTTPChannelHandler.Responder { base.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        guard perAddress.admit(channel) else {
            logger.debug("refused a connection: too many from \(channel.remoteAddress?.ipAddress ?? "?")")
            return channel.close().flatMapThrowing { throw ChannelError.ioOnClosedChannel }
        }
        return channel.eventLoop.makeCompletedFuture {
            if let sslContext {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                try channel.pipeline.syncOperations.addHandler(HandshakeDeadlineHandler(timeout: handshakeTimeout))
            }
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// Open connections per remote address, shared by every listener of a server.
final class PerAddressLimit: Sendable {
    let limit: Int
    private let counts = NIOLockedValueBox<[String: Int]>([:])

    init(limit: Int) { self.limit = limit }

    /// Counts the connection in (false: over the limit) and out again when it closes.
    func admit(_ channel: any Channel) -> Bool {
        guard let address = channel.remoteAddress?.ipAddress else { return true }
        let admitted = counts.withLockedValue { counts -> Bool in
            guard counts[address, default: 0] < limit else { return false }
            counts[address, default: 0] += 1
            return true
        }
        guard admitted else { return false }
        channel.closeFuture.whenComplete { [counts] _ in
            counts.withLockedValue { counts in
                let left = counts[address, default: 1] - 1
                counts[address] = left > 0 ? left : nil
            }
        }
        return true
    }
}

extension HTTPServerBuilder {
    /// HTTP/1 (and TLS when `sslContext` is set) with `limits`.
    static func guarded(limits: ConnectionLimits, sslContext: NIOSSLContext?, logger: Logger,
                        perAddress: PerAddressLimit? = nil) -> HTTPServerBuilder {
        let perAddress = perAddress ?? PerAddressLimit(limit: limits.maxPerAddress)
        return .init { responder in
            let configuration = HTTP1Channel.Configuration(
                additionalChannelHandlers: [RequestDeadlineHandler(headerTimeout: limits.headerTimeout, bodyTimeout: limits.bodyTimeout, logger: logger)],
                idleTimeout: limits.idleTimeout,
                httpDecoderConfiguration: .init(maxHeaderFieldSize: 16 * 1024, maxHeaderListSize: 64 * 1024, maxHeaderFieldCount: 100))
            return GuardedHTTPChannel(base: HTTP1Channel(responder: responder, configuration: configuration),
                                      sslContext: sslContext, handshakeTimeout: limits.handshakeTimeout, perAddress: perAddress)
        }
    }
}
