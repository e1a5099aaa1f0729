import MTASTSCore
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
@testable import Socketmap
import Testing

/// The socketmap server against hostile clients and hostile policies (issue: hostile input, item 6).
@Suite struct SocketmapGuardsTests {
    /// Answers nothing until released.
    final class Gate: SocketmapResponder {
        let open = NIOLockedValueBox(false)
        func immediateReply(to request: SocketmapRequest) -> String? { nil }
        func reply(to request: SocketmapRequest) async -> String {
            while !open.withLockedValue({ $0 }) { try? await Task.sleep(for: .milliseconds(2)) }
            return SocketmapReply.notFound
        }
    }

    @Test("a client that pipelines without reading replies is read no further past 128 owed replies, and again once they drain")
    func backpressure() async throws {
        let gate = Gate()
        // The thread-safe test channel: the handler hops back to its loop from the responder's task.
        let channel = NIOAsyncTestingChannel()
        let bound = try await channel.testingEventLoop.submit {
            let handler = SocketmapHandler(responder: gate, replyTimeout: .seconds(60), latency: nil)
            try channel.pipeline.syncOperations.addHandler(handler)
            return NIOLoopBound(handler, eventLoop: channel.eventLoop)
        }.get()
        let paused: @Sendable () async throws -> Bool = {
            try await channel.testingEventLoop.submit { bound.value.readingPaused }.get()
        }
        // (The test channel answers true for autoRead whatever was set: the handler's own state is read.)
        for i in 0..<127 { try await channel.writeInbound(ByteBuffer(string: "postfix d\(i).example")) }
        #expect(try await !paused())
        try await channel.writeInbound(ByteBuffer(string: "postfix d127.example"))
        #expect(try await paused())
        gate.open.withLockedValue { $0 = true }
        var replies = 0
        for _ in 0..<2_000 where replies < 128 {
            try await Task.sleep(for: .milliseconds(5))
            await channel.testingEventLoop.run()
            while let _ = try await channel.readOutbound(as: ByteBuffer.self) { replies += 1 }
        }
        #expect(replies == 128)
        #expect(try await !paused())
        _ = try? await channel.finish()
    }

    @Test("a connection without a whole request for the idle time-out is closed, never while a reply is owed; trickled bytes of a request do not keep it open")
    func idleConnections() async throws {
        func open(_ responder: any SocketmapResponder) async throws -> NIOAsyncTestingChannel {
            let channel = NIOAsyncTestingChannel()
            try await channel.testingEventLoop.submit {
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(NetstringDecoder(maxLength: 2_048)))
                try channel.pipeline.syncOperations.addHandler(SocketmapHandler(responder: responder, replyTimeout: .seconds(600), latency: nil,
                                                                                 idleTimeout: .seconds(10)))
            }.get()
            try await channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 25)).get()
            return channel
        }
        func frame(_ payload: String) -> ByteBuffer { ByteBuffer(string: "\(payload.utf8.count):\(payload),") }
        func active(_ channel: NIOAsyncTestingChannel) async throws -> Bool {
            try await channel.testingEventLoop.submit { channel.isActive }.get()
        }
        let gate = Gate()
        let owed = try await open(gate)
        await owed.testingEventLoop.advanceTime(by: .seconds(9))
        #expect(try await active(owed))
        try await owed.writeInbound(frame("postfix d1.example"))
        // The reply is owed for 30 s: the connection stays.
        await owed.testingEventLoop.advanceTime(by: .seconds(30))
        #expect(try await active(owed))
        gate.open.withLockedValue { $0 = true }
        var reply: ByteBuffer?
        for _ in 0..<1_000 where reply == nil {
            try await Task.sleep(for: .milliseconds(5))
            await owed.testingEventLoop.run()
            reply = try await owed.readOutbound(as: ByteBuffer.self)
        }
        #expect(reply.map { String(buffer: $0) } == "9:NOTFOUND ,")
        // Owed nothing and no request for 10 s: closed at the next check.
        #expect(try await active(owed))
        await owed.testingEventLoop.advanceTime(by: .seconds(10))
        #expect(try await !active(owed))

        // Bytes of a request that never completes are not a request.
        let trickle = try await open(gate)
        try await trickle.writeInbound(ByteBuffer(string: "18:postfix d"))
        await trickle.testingEventLoop.advanceTime(by: .seconds(6))
        try await trickle.writeInbound(ByteBuffer(string: "1.exam"))
        await trickle.testingEventLoop.advanceTime(by: .seconds(3))
        #expect(try await active(trickle))
        await trickle.testingEventLoop.advanceTime(by: .seconds(2))
        #expect(try await !active(trickle))

        // Requests keep a connection open for as long as they come.
        let busy = try await open(gate)
        for i in 0..<5 {
            await busy.testingEventLoop.advanceTime(by: .seconds(8))
            try await busy.writeInbound(frame("postfix d\(i).example"))
        }
        #expect(try await active(busy))
        _ = try? await busy.finish()
    }

    @Test("a policy line holding '}' cannot add Postfix attributes; an oversized reply keeps the policy and drops the TLSRPT attributes")
    func replyEscapingAndSize() throws {
        let domain = try DomainName("victim.example")
        let hostile = STSPolicy(mode: .enforce, maxAge: 86_400, mx: [try MXPattern(strict: "mx.victim.example")],
                                extensions: [RecordField(name: "x", value: "a } policy_type=tlsa { b")])
        let reply = SocketmapReply.render(policy: hostile, domain: domain, tlsrpt: true)
        #expect(reply.components(separatedBy: "policy_type=").count == 2, "\(reply)")
        #expect(reply.contains("{ policy_string = mode: enforce }"))
        #expect(!reply.contains("policy_string = x:"))

        let many = try (0..<1_500).map { try MXPattern(strict: "mx\($0).a-rather-long-mail-host-name.victim.example") }
        let big = STSPolicy(mode: .enforce, maxAge: 86_400, mx: many)
        let plain = SocketmapReply.render(policy: big, domain: domain, tlsrpt: false)
        let withTLSRPT = SocketmapReply.render(policy: big, domain: domain, tlsrpt: true)
        #expect(withTLSRPT.utf8.count <= SocketmapReply.maxReplySize)
        #expect(withTLSRPT == plain)
        #expect(plain.hasPrefix("OK secure match="))
    }
}
