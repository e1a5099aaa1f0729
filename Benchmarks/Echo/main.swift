// The bound of the socketmap benchmark: a socketmap server that does no look-up. It runs the
// daemon's own stack (SwiftNIO on the same event loop group, the same netstring decoder with the
// same request limit, TCP_NODELAY as NIO sets it) and answers every request with the bytes of a
// typical cached reply. What the daemon adds on top of this is the cost of its look-up.
//
// Usage: mtasts-bench-echo --port P   (prints "ready port=P")
import Foundation
import NIOCore
import NIOPosix
import Socketmap

final class Echo: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    static let reply: ByteBuffer = {
        var b = ByteBufferAllocator().buffer(capacity: 64)
        Netstring.write("OK secure match=mail.d00001.bench servername=hostname", to: &b)
        return b
    }()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(wrapOutboundOut(Self.reply), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
}

var port = 0
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    if a == "--port", let v = args.popFirst(), let p = Int(v) { port = p }
}
let server = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(NetstringDecoder(maxLength: 2_048)))
            try channel.pipeline.syncOperations.addHandler(Echo())
        }
    }
    .bind(host: "127.0.0.1", port: port).wait()
FileHandle.standardOutput.write(Data("ready port=\(server.localAddress?.port ?? port)\n".utf8))
try server.closeFuture.wait()
