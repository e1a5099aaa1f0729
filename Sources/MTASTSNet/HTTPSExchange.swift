import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// The project's HTTP client: one HTTP/1.1 request on a fresh TLS connection, the response body
/// capped while it streams, one deadline for the whole exchange (a server that trickles bytes is
/// cut off), redirects never followed. The policy fetch (GET, certificate checked by our
/// callback) and the report delivery (POST, the trust store) both use it.
public enum HTTPSExchange {
    public struct Response: Sendable {
        public var head: HTTPResponseHead
        public var body: [UInt8]
        public var tlsVersion: String?
    }

    public enum Failure: Error, Sendable {
        case timeout
        case tooLarge(Int)
        case closedEarly
    }

    /// What to do with a body over `maxBody`: fail the exchange (a policy), or keep the first
    /// `maxBody` bytes (an error text after a POST).
    public enum Overflow: Sendable { case fail, truncate }

    public static func run(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, host: String, port: Int,
                           tls: @escaping @Sendable () throws -> NIOSSLClientHandler, request: HTTPRequestHead, body: [UInt8]? = nil,
                           maxBody: Int, overflow: Overflow = .fail, connectTimeout: TimeAmount, deadline: TimeAmount) async throws -> Response {
        let promise = group.next().makePromise(of: Response.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try tls())
                    try channel.pipeline.syncOperations.addHandler(HTTPRequestEncoder())
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)))
                    try channel.pipeline.syncOperations.addHandler(ExchangeHandler(request: request, body: body, maxBody: maxBody, overflow: overflow, promise: promise))
                }
            }
            .connect(host: host, port: port).get()
        } catch {
            promise.fail(error)  // never connected: the promise must not be left open
            throw error
        }
        let timer = channel.eventLoop.scheduleTask(in: deadline) {
            promise.fail(Failure.timeout)
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        let response: Response
        do {
            response = try await promise.futureResult.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
        channel.close(promise: nil)
        return response
    }
}

/// Sends the request, collects the response, applies the body cap as it streams.
final class ExchangeHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let request: HTTPRequestHead
    let requestBody: [UInt8]?
    let maxBody: Int
    let overflow: HTTPSExchange.Overflow
    let promise: EventLoopPromise<HTTPSExchange.Response>
    var head: HTTPResponseHead?
    var body: [UInt8] = []
    var done = false

    init(request: HTTPRequestHead, body: [UInt8]?, maxBody: Int, overflow: HTTPSExchange.Overflow, promise: EventLoopPromise<HTTPSExchange.Response>) {
        self.request = request
        self.requestBody = body
        self.maxBody = maxBody
        self.overflow = overflow
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        if let requestBody { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: requestBody)))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            if overflow == .fail, let length = h.headers.first(name: "content-length").flatMap(Int.init), length > maxBody {
                finish(context, .failure(HTTPSExchange.Failure.tooLarge(length)))
            }
        case .body(var buffer):
            if body.count + buffer.readableBytes > maxBody {
                guard overflow == .truncate else {
                    finish(context, .failure(HTTPSExchange.Failure.tooLarge(body.count + buffer.readableBytes)))
                    return
                }
                body += buffer.readBytes(length: max(0, maxBody - body.count)) ?? []
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head else { return }
            // The TLS version is read here, on the channel's event loop: the TLS handler is not
            // thread-safe, and once the server closes, the loop frees its connection (reading it
            // from another thread then could dereference freed state).
            let ssl = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self)
            finish(context, .success(HTTPSExchange.Response(head: head, body: body, tlsVersion: ssl.flatMap { TLSSetup.describe($0.tlsVersion) })))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(context, .failure(HTTPSExchange.Failure.closedEarly))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(context, .failure(error))
    }

    private func finish(_ context: ChannelHandlerContext, _ result: Result<HTTPSExchange.Response, any Error>) {
        guard !done else { return }
        done = true
        promise.completeWith(result)
        if case .failure = result { context.close(promise: nil) }
    }
}

extension TLSSetup {
    /// TLS with the system's trust store (or the CA files given: tests, private CAs), verified by
    /// NIOSSL with the host name: for delivering reports, where no RFC 8461 verdict is needed.
    public static func trustStoreContext(caFiles: [String]) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if !caFiles.isEmpty {
            var certificates: [NIOSSLCertificate] = []
            for file in caFiles { certificates += try NIOSSLCertificate.fromPEMFile(file) }
            tls.trustRoots = .certificates(certificates)
        }
        return try NIOSSLContext(configuration: tls)
    }
}
