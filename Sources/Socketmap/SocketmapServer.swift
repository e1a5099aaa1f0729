import Foundation
import NIOConcurrencyHelpers
import Metrics
import NIOCore
import NIOPosix
import ServerSupport

/// Answers socketmap requests. `immediateReply` answers from memory without waiting (nil when it
/// cannot); `reply` may wait for DNS and HTTPS. Neither may throw: failures are `TEMP` replies.
/// What the hit path makes of a request.
public enum SocketmapCacheAnswer: Sendable {
    /// The whole reply, already a netstring, was appended to the caller's buffer.
    case written
    /// The key is in normalised form and not cached: the ordinary cache look-up would miss too,
    /// so the request goes straight to `reply(to:)`.
    case notCached
    /// Not for the hit path (a key to normalise, a malformed request): `immediateReply` first.
    case notHandled
}

public protocol SocketmapResponder: Sendable {
    /// The reply for a request payload (`name key` bytes) answered from memory without parsing
    /// it into strings, appended to `out` (`.written`; nothing appended otherwise): the hit path.
    func cachedReply(payload: ByteBuffer, into out: inout ByteBuffer) -> SocketmapCacheAnswer
    /// For a `.notCached` key: the reply read from the persistent cache by a pool of readers,
    /// completed on `loop` (nil bytes: not there, or not usable as it is; the request then takes
    /// `reply(to:)`). Nil when there is no such store: `reply(to:)` at once.
    func storedReply(payload: ByteBuffer, on loop: any EventLoop) -> EventLoopFuture<ByteBuffer?>?
    func immediateReply(to request: SocketmapRequest) -> String?
    func reply(to request: SocketmapRequest) async -> String
}

extension SocketmapResponder {
    public func cachedReply(payload: ByteBuffer, into out: inout ByteBuffer) -> SocketmapCacheAnswer { .notHandled }
    public func storedReply(payload: ByteBuffer, on loop: any EventLoop) -> EventLoopFuture<ByteBuffer?>? { nil }
}

/// The Postfix socketmap server (socketmap_table(5)): netstring requests on persistent
/// connections, pipelined, answered in order. A malformed request gets `PERM` and the connection
/// goes on; broken framing (a bad length, a missing `,`, a request over the size limit) gets
/// `PERM` after the replies already owed, then the connection is closed, since the next request
/// cannot be found. Other connections never notice.
public final class SocketmapServer: Sendable {
    public struct Limits: Sendable {
        public var maxRequestLength: Int = 2_048
        public var idleTimeout: TimeAmount = .seconds(300)
        public var maxConnections: Int = 4_096
        /// A reply not ready by then is `TEMP` (Postfix defers and retries).
        public var replyTimeout: TimeAmount = .seconds(20)
        public init() {}
    }

    let responder: any SocketmapResponder
    let limits: Limits
    let group: any EventLoopGroup
    let state = NIOLockedValueBox(ServerState())
    /// Reply latency in seconds, by the caller's choice of buckets.
    public let latency: LatencyHistogram?
    let refusedCounter = Metrics.Counter(label: "mtasts_connections_refused_total")
    let connectionsGauge = Metrics.Gauge(label: "mtasts_connections")

    struct ServerState {
        var listeners: [any Channel] = []
        var connections: [ObjectIdentifier: any Channel] = [:]
        var refused = 0
        var draining = false
    }

    public init(responder: any SocketmapResponder, limits: Limits = Limits(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                latency: LatencyHistogram? = nil) {
        self.responder = responder
        self.limits = limits
        self.group = group
        self.latency = latency
    }

    public var connectionCount: Int { state.withLockedValue { $0.connections.count } }

    /// Records the gauges (open connections) for an export that is about to be read.
    public func recordGauges() { connectionsGauge.record(connectionCount) }
    public var refusedConnections: Int { state.withLockedValue { $0.refused } }

    /// Listens on TCP; returns the bound port (useful with port 0).
    @discardableResult
    public func listen(host: String, port: Int, reusePort: Bool = false) async throws -> Int {
        let channel = try await bootstrap(reusePort: reusePort).bind(host: host, port: port).get()
        state.withLockedValue { $0.listeners.append(channel) }
        return channel.localAddress?.port ?? port
    }

    /// Listens on a unix socket (an old socket file is replaced), then sets its mode and owner.
    public func listen(unixPath: String, mode: mode_t? = nil, owner: (uid: uid_t, gid: gid_t)? = nil) async throws {
        let channel = try await bootstrap(reusePort: false).bind(unixDomainSocketPath: unixPath, cleanupExistingSocketFile: true).get()
        state.withLockedValue { $0.listeners.append(channel) }
        if let mode, chmod(unixPath, mode) != 0 { throw IOError(errnoCode: errno, reason: "chmod \(unixPath)") }
        if let owner, chown(unixPath, owner.uid, owner.gid) != 0 { throw IOError(errnoCode: errno, reason: "chown \(unixPath)") }
    }

    func bootstrap(reusePort: Bool) -> ServerBootstrap {
        let limits = self.limits
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.Types.SocketOption(level: .socket, name: NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: reusePort ? 1 : 0)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { [self] channel in
                let admitted = self.state.withLockedValue { state -> Bool in
                    guard !state.draining, state.connections.count < limits.maxConnections else {
                        state.refused += 1
                        self.refusedCounter.increment()
                        return false
                    }
                    state.connections[ObjectIdentifier(channel)] = channel
                    return true
                }
                guard admitted else { return channel.close() }
                channel.closeFuture.whenComplete { _ in
                    _ = self.state.withLockedValue { $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(ByteToMessageHandler(NetstringDecoder(maxLength: limits.maxRequestLength)))
                    try sync.addHandler(SocketmapHandler(responder: self.responder, replyTimeout: limits.replyTimeout, latency: self.latency,
                                                         idleTimeout: limits.idleTimeout))
                }
            }
    }

    /// Stops accepting; lets every connection finish the requests it has sent, then closes it;
    /// after `grace`, closes whatever is left.
    public func shutdown(grace: Duration) async {
        let (listeners, connections) = state.withLockedValue { state -> ([any Channel], [any Channel]) in
            state.draining = true
            return (state.listeners, Array(state.connections.values))
        }
        for l in listeners { try? await l.close() }
        for c in connections {
            c.pipeline.handler(type: SocketmapHandler.self).whenSuccess { handler in
                handler.closeWhenDrained()
            }
        }
        let deadline = ContinuousClock.now + grace
        while connectionCount > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for c in state.withLockedValue({ Array($0.connections.values) }) { try? await c.close() }
    }
}

/// One connection: requests in, replies out in the same order.
final class SocketmapHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let responder: any SocketmapResponder
    let replyTimeout: TimeAmount
    let latency: LatencyHistogram?
    /// Replies owed (netstrings), oldest first; nil while a reply is being worked out.
    var queue = CircularBuffer<ByteBuffer?>()
    /// The sequence number of `queue.first`.
    var head = 0
    var closeAfterDrain = false
    var context: ChannelHandlerContext?
    var pendingFlush = false
    /// The hit path's reply, written into the same storage request after request (it is free
    /// again once the previous reply went out; if not, writing into it takes a copy).
    var out = ByteBufferAllocator().buffer(capacity: 128)
    /// Replies a connection may owe before it is read no further: a client that pipelines
    /// requests without reading replies is held back (TCP backpressure), never queued without end.
    static let maxOwed = 128
    var readingPaused = false

    /// A connection that sent no whole request for this long, and is owed nothing, is closed
    /// (nil: never). Kept here rather than by an IdleStateHandler in front: that handler is one
    /// more stop for every read, write and flush of the hit path; this costs a time stored per
    /// request (taken anyway for the latency) and one timer per `idleTimeout`. A client that
    /// trickles the bytes of a request it never completes is idle too.
    let idleTimeout: TimeAmount?
    var lastRequest = NIODeadline.now()
    var idleTimer: Scheduled<Void>?

    init(responder: any SocketmapResponder, replyTimeout: TimeAmount, latency: LatencyHistogram?, idleTimeout: TimeAmount? = nil) {
        self.responder = responder
        self.replyTimeout = replyTimeout
        self.latency = latency
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        lastRequest = context.eventLoop.now
        if context.channel.isActive { armIdleTimer(context, at: lastRequest) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if idleTimer == nil { armIdleTimer(context, at: lastRequest) }
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopIdleTimer()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopIdleTimer()
        context.fireChannelInactive()
    }

    func stopIdleTimer() {
        idleTimer?.cancel()
        idleTimer = nil
    }

    /// The check for idleness, due `idleTimeout` after `from`: closes the connection if no
    /// request came since and nothing is owed; else checks again `idleTimeout` after the last
    /// request (or from now, while replies are owed).
    func armIdleTimer(_ context: ChannelHandlerContext, at from: NIODeadline) {
        guard let idleTimeout else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let contextBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(deadline: from + idleTimeout) {
            let handler = bound.value, context = contextBound.value
            handler.idleTimer = nil
            guard handler.context != nil else { return }
            let now = context.eventLoop.now
            if !handler.queue.isEmpty {
                handler.armIdleTimer(context, at: now)
            } else if now - handler.lastRequest >= idleTimeout {
                context.close(promise: nil)
            } else {
                handler.armIdleTimer(context, at: handler.lastRequest)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = unwrapInboundIn(data)
        let start = context.eventLoop.now  // the loop's clock: a test's loop runs on its own time
        lastRequest = start
        var cached = SocketmapCacheAnswer.notHandled
        if queue.isEmpty {
            out.clear()
            cached = responder.cachedReply(payload: payload, into: &out)
            if case .written = cached {
                context.write(wrapOutboundOut(out), promise: nil)
                pendingFlush = true
                latency?.observe(NIODeadline.now() - start)
                if !context.channel.isWritable { updateReading(context) }
                return
            }
        }
        if case .notCached = cached, let stored = responder.storedReply(payload: payload, on: context.eventLoop) {
            // Read from the persistent cache by its readers; what they cannot answer takes the
            // ordinary path (below) from the same place in the queue.
            let sequence = head + queue.count
            queue.append(nil)
            updateReading(context)
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let latency = self.latency
            stored.whenComplete { result in
                let handler = bound.value
                if case .success(let bytes?) = result {
                    latency?.observe(NIODeadline.now() - start)
                    handler.fill(sequence, bytes)
                } else if let context = handler.context {
                    handler.answer(payload, sequence: sequence, start: start, context: context)
                }
            }
            return
        }
        guard let request = SocketmapRequest.parse(Array(payload.readableBytesView)) else {
            enqueueReady(Self.malformed, context: context)
            return
        }
        if queue.isEmpty, case .notHandled = cached, let reply = responder.immediateReply(to: request) {
            write(reply, context: context)
            latency?.observe(NIODeadline.now() - start)
            if !context.channel.isWritable { updateReading(context) }
            return
        }
        let sequence = head + queue.count
        queue.append(nil)
        updateReading(context)
        answer(request, sequence: sequence, start: start, context: context)
    }

    /// The ordinary path for a request whose place in the queue is `sequence` (a payload the
    /// stored-reply readers could not answer is parsed here).
    func answer(_ payload: ByteBuffer, sequence: Int, start: NIODeadline, context: ChannelHandlerContext) {
        guard let request = SocketmapRequest.parse(Array(payload.readableBytesView)) else {
            fill(sequence, Self.netstring(Self.malformed, context.channel.allocator))
            return
        }
        answer(request, sequence: sequence, start: start, context: context)
    }

    /// Works out the reply for `request` off the event loop; `fill` puts it in its place. A reply
    /// not ready within the time-out is `TEMP`.
    func answer(_ request: SocketmapRequest, sequence: Int, start: NIODeadline, context: ChannelHandlerContext) {
        let loop = context.eventLoop
        let allocator = context.channel.allocator
        let bound = NIOLoopBound(self, eventLoop: loop)
        let responder = self.responder
        let timeout = replyTimeout
        let latency = self.latency
        let once = NIOLockedValueBox(false)
        let deliver: @Sendable (String) -> Void = { reply in
            guard once.withLockedValue({ done in defer { done = true }; return !done }) else { return }
            latency?.observe(NIODeadline.now() - start)
            let bytes = Self.netstring(reply, allocator)
            loop.execute { bound.value.fill(sequence, bytes) }
        }
        let timer = loop.scheduleTask(in: timeout) {
            deliver(SocketmapReply.temporary("no answer within \(timeout.nanoseconds / 1_000_000_000) s"))
        }
        Task {
            let reply = await responder.reply(to: request)
            timer.cancel()
            deliver(reply)
        }
    }

    static let malformed = SocketmapReply.permanent("malformed request: expected 'name key' in UTF-8")

    static func netstring(_ reply: String, _ allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: reply.utf8.count + 8)
        Netstring.write(reply, to: &buffer)
        return buffer
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if pendingFlush {
            pendingFlush = false
            context.flush()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let e = error as? NetstringError {
            enqueueReady(SocketmapReply.permanent("malformed netstring: \(e.description)"), context: context)
            closeWhenDrained()
        } else {
            context.close(promise: nil)
        }
    }

    func closeWhenDrained() {
        closeAfterDrain = true
        if queue.isEmpty { finish() }
    }

    func enqueueReady(_ reply: String, context: ChannelHandlerContext) {
        if queue.isEmpty {
            write(reply, context: context)
        } else {
            queue.append(Self.netstring(reply, context.channel.allocator))
            updateReading(context)
        }
    }

    /// Reading pauses while the connection owes `maxOwed` replies or its replies are not being
    /// read (the channel is not writable), and resumes once both have eased.
    func updateReading(_ context: ChannelHandlerContext) {
        let pause = queue.count >= Self.maxOwed || !context.channel.isWritable
        let resume = queue.count < Self.maxOwed / 2 && context.channel.isWritable
        if pause, !readingPaused {
            readingPaused = true
            try? context.channel.syncOptions?.setOption(.autoRead, value: false)
        } else if resume, readingPaused {
            readingPaused = false
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        updateReading(context)
        context.fireChannelWritabilityChanged()
    }

    func fill(_ sequence: Int, _ reply: ByteBuffer) {
        let index = sequence - head
        guard let context, index >= 0, index < queue.count else { return }
        queue[queue.index(queue.startIndex, offsetBy: index)] = reply
        while let first = queue.first, let ready = first {
            queue.removeFirst()
            head += 1
            context.write(wrapOutboundOut(ready), promise: nil)
            pendingFlush = true
        }
        if closeAfterDrain, queue.isEmpty {
            finish()
        } else if pendingFlush {
            pendingFlush = false
            context.flush()
        }
        if readingPaused { updateReading(context) }
    }

    func write(_ reply: String, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(Self.netstring(reply, context.channel.allocator)), promise: nil)
        pendingFlush = true
    }

    /// Flushes what is owed, then closes (the empty write completes after every earlier one).
    func finish() {
        guard let context else { return }
        pendingFlush = false
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(capacity: 0))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Socketmap reply latency (`mtasts_reply_seconds`, a Prometheus histogram in seconds): lock-free
/// atomics on the hit path, exported with the other metrics.
public final class LatencyHistogram: Sendable {
    let histogram: AtomicHistogram

    public init(label: String = "mtasts_reply_seconds") {
        histogram = AtomicHistogram(label: label)
        MetricsExport.register(histogram)
    }

    public func observe(_ elapsed: TimeAmount) {
        histogram.record(nanoseconds: elapsed.nanoseconds)
    }
}
