import NIOCore
import NIOSSL
import NIOTLS

/// What the channel hands to the client: a whole response, or the tick of an IDLE deadline.
enum IMAPInbound: Sendable {
    case frame(IMAPResponseStream.Frame)
    case tick(Int)
}

/// Cuts the inbound bytes into responses (`IMAPResponseStream`) on the event loop and passes
/// them on, one `IMAPInbound` each. A malformed response fails the stream and closes the
/// connection. Counts the responses passed on, so that the client can tell, at STARTTLS, whether
/// anything came after the server's OK. What waits for the client is bounded by the async
/// channel's watermark plus the responses of one read.
final class IMAPFrameHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = IMAPInbound

    private var stream: IMAPResponseStream
    private var context: ChannelHandlerContext?
    private var failed = false
    /// Responses passed on (on the event loop).
    private(set) var emitted = 0

    init(limits: IMAPParserLimits) {
        stream = IMAPResponseStream(limits: limits)
    }

    /// Holds it bytes that are not yet a whole response (on the event loop)?
    var holdsPartialResponse: Bool { stream.holdsPartialResponse }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let buffer = unwrapInboundIn(data)
        buffer.withUnsafeReadableBytes { stream.append($0) }
        do {
            while let frame = try stream.next() {
                emitted += 1
                context.fireChannelRead(wrapInboundOut(.frame(frame)))
            }
        } catch {
            failed = true
            context.fireErrorCaught(error)
            context.close(promise: nil)
        }
    }

    /// Passes on the tick `id` (call on the event loop): it wakes a client waiting in IDLE.
    func tick(_ id: Int) {
        guard let context, !failed else { return }
        context.fireChannelRead(wrapInboundOut(.tick(id)))
        // The async channel hands reads over at the read's end.
        context.fireChannelReadComplete()
    }
}

/// Completes `done` when the TLS handshake after STARTTLS finishes, or fails it.
final class IMAPHandshakeWatcher: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    private let done: EventLoopPromise<Void>
    private var finished = false

    init(done: EventLoopPromise<Void>) { self.done = done }

    private func complete(_ result: Result<Void, any Error>) {
        guard !finished else { return }
        finished = true
        done.completeWith(result)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { complete(.success(())) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        complete(.failure(error))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        complete(.failure(IMAPError(.closed, "the server closed the connection in the TLS handshake")))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        complete(.failure(IMAPError(.closed, "the TLS handshake was abandoned")))
    }
}
