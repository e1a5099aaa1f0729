import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix
import NIOSSL

/// How a test policy host answers `GET /.well-known/mta-sts.txt`.
public enum PolicyBehaviour: Sendable {
    /// A complete response.
    case respond(status: Int, contentType: String?, body: String, extraHeaders: [String] = [])
    /// A body of `size` bytes sent as fast as possible (Content-Length announced or chunked).
    case large(size: Int, announceLength: Bool)
    /// Sends the head, then one body byte every `interval` (a slow loris answer).
    case trickle(body: String, interval: TimeAmount)
    /// Whatever the box holds at the time of the request; the box counts requests.
    case dynamic(PolicyBox)
}

/// A policy host's answer that a test changes while the host runs.
public final class PolicyBox: @unchecked Sendable {
    private let lock = NSLock()
    private var answer: (status: Int, contentType: String?, body: String)
    private var served = 0

    public init(status: Int = 200, contentType: String? = "text/plain", body: String) { answer = (status, contentType, body) }

    public func set(status: Int = 200, contentType: String? = "text/plain", body: String) { lock.withLock { answer = (status, contentType, body) } }
    public var requests: Int { lock.withLock { served } }

    func take() -> (status: Int, contentType: String?, body: String) {
        lock.withLock {
            served += 1
            return answer
        }
    }
}

/// How a test MX answers an SMTP client.
public enum SMTPBehaviour: Sendable {
    /// Banner, EHLO with STARTTLS, TLS with the given certificate.
    case starttls
    /// Banner and EHLO without STARTTLS.
    case noSTARTTLS
    /// Banner, then silence (a tarpit).
    case stallAfterBanner
    /// Answers EHLO with a reply that never ends (continuation lines without end).
    case endlessReply
    /// A STARTTLS injection: the 220 to STARTTLS is followed, in the same write, by plaintext
    /// replies a client must not take for encrypted ones.
    case injectAfterSTARTTLS
}

/// What test MX hosts received: one line per message, with whether it came over TLS.
public final class MailLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [(host: String, tls: Bool, data: String, user: String?)] = []
    private var lines: [String] = []
    public init() {}
    func command(_ line: String) { lock.withLock { lines.append(line) } }
    /// Every command line received, in order (message content excluded): the exact dialogue.
    public var dialogue: [String] { lock.withLock { lines } }
    func add(_ host: String, _ tls: Bool, _ data: String, user: String? = nil) { lock.withLock { items.append((host, tls, data, user)) } }
    /// Each message, with the user that authenticated (AUTH PLAIN), if any.
    public var messages: [(host: String, tls: Bool, data: String, user: String?)] { lock.withLock { items } }
}

/// A TLS server on one loopback address and port, for the test's lifetime.
public final class TestServer: @unchecked Sendable {
    public let address: String
    public let port: Int
    let channel: (any Channel)?
    let http: HTTPTestServer?

    /// An HTTPS policy host with the certificate `leaf` (PEM), answering every GET as `behaviour`
    /// (on Hummingbird, the stack `mtasts serve` uses).
    public static func policyHost(address: String, port: Int, leaf: TestCA.Leaf, behaviour: PolicyBehaviour) throws -> TestServer {
        let router = Router()
        router.get("**") { _, _ in PolicyHostAnswer.response(behaviour) }
        router.get("/") { _, _ in PolicyHostAnswer.response(behaviour) }
        return TestServer(address: address, port: port, http: try HTTPTestServer(address: address, port: port, leaf: leaf, router: router))
    }

    /// An SMTP MX host; `leaf` is the certificate it presents after STARTTLS.
    /// With `auth`, AUTH PLAIN is offered after STARTTLS and only that user and password are accepted.
    public static func mx(address: String, port: Int, hostname: String, leaf: TestCA.Leaf?, behaviour: SMTPBehaviour, mail: MailLog? = nil,
                          auth: (user: String, password: String)? = nil) throws -> TestServer {
        let context = try leaf.map(serverContext)
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(SMTPServerHandler(hostname: hostname, context: context, behaviour: behaviour, mail: mail, auth: auth))
                }
            }
            .bind(host: address, port: port).wait()
        return TestServer(address: address, port: port, channel: channel)
    }

    init(address: String, port: Int, channel: any Channel) {
        self.address = address
        self.port = port
        self.channel = channel
        self.http = nil
    }

    init(address: String, port: Int, http: HTTPTestServer) {
        self.address = address
        self.port = port
        self.channel = nil
        self.http = http
    }

    static func serverContext(_ leaf: TestCA.Leaf) throws -> NIOSSLContext {
        let cert = try NIOSSLCertificate(bytes: Array(leaf.certificatePEM.utf8), format: .pem)
        let key = try NIOSSLPrivateKey(bytes: Array(leaf.keyPEM.utf8), format: .pem)
        let configuration = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(cert)], privateKey: .privateKey(key))
        return try NIOSSLContext(configuration: configuration)
    }

    /// A free TCP port on loopback (bound and released).
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    deinit { try? channel?.close().wait() }
}

/// The policy host's answers.
enum PolicyHostAnswer {
    static func response(_ behaviour: PolicyBehaviour) -> Response {
        switch behaviour {
        case .dynamic(let box):
            let a = box.take()
            return response(.respond(status: a.status, contentType: a.contentType, body: a.body))
        case .respond(let status, let contentType, let body, let extra):
            var headers = HTTPFields()
            if let contentType { headers[.contentType] = contentType }
            for line in extra {
                let parts = line.split(separator: ":", maxSplits: 1)
                if parts.count == 2, let name = HTTPField.Name(String(parts[0])) { headers.append(HTTPField(name: name, value: parts[1].trimmingCharacters(in: .whitespaces))) }
            }
            return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
        case .large(let size, let announce):
            // With a length: Content-Length is announced; without: chunked.
            return Response(status: .ok, headers: [.contentType: "text/plain"], body: ResponseBody(contentLength: announce ? size : nil) { writer in
                let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 8192)
                var left = size
                while left > 0 {
                    let n = min(left, chunk.readableBytes)
                    try await writer.write(chunk.getSlice(at: 0, length: n)!)
                    left -= n
                }
                try await writer.finish(nil)
            })
        case .trickle(let body, let interval):
            let bytes = Array(body.utf8)
            return Response(status: .ok, headers: [.contentType: "text/plain"], body: ResponseBody(contentLength: bytes.count) { writer in
                for b in bytes {
                    try await Task.sleep(for: .nanoseconds(interval.nanoseconds))
                    try await writer.write(ByteBuffer(bytes: [b]))
                }
                try await writer.finish(nil)
            })
        }
    }
}

final class SMTPServerHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let hostname: String
    let context: NIOSSLContext?
    let behaviour: SMTPBehaviour
    var pending = ""
    var tls = false
    let mail: MailLog?
    var inData = false
    var data = ""
    let auth: (user: String, password: String)?
    var user: String?

    init(hostname: String, context: NIOSSLContext?, behaviour: SMTPBehaviour, mail: MailLog? = nil, auth: (user: String, password: String)? = nil) {
        self.hostname = hostname
        self.context = context
        self.behaviour = behaviour
        self.mail = mail
        self.auth = auth
    }

    func channelActive(context: ChannelHandlerContext) {
        send(context, "220 \(hostname) ESMTP test")
    }

    private func send(_ context: ChannelHandlerContext, _ line: String) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: line + "\r\n")), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        pending += buffer.readString(length: buffer.readableBytes) ?? ""
        while let range = pending.range(of: "\r\n") {
            let line = String(pending[..<range.lowerBound])
            pending = String(pending[range.upperBound...])
            handle(context, line)
        }
    }

    private func handle(_ context: ChannelHandlerContext, _ line: String) {
        if case .stallAfterBanner = behaviour { return }
        if inData {
            if line == "." {
                inData = false
                mail?.add(hostname, tls, data, user: user)
                data = ""
                send(context, "250 2.0.0 queued")
            } else {
                data += line + "\n"
            }
            return
        }
        mail?.command(line)
        let verb = line.split(separator: " ").first.map { $0.uppercased() } ?? ""
        if case .endlessReply = behaviour, verb == "EHLO" {
            for i in 0..<1_000 { send(context, "250-line \(i)") }
            return
        }
        switch verb {
        case "EHLO":
            var lines = ["250-\(hostname)", "250-PIPELINING", "250-SIZE 10240000"]
            if !tls { if case .starttls = behaviour { lines.append("250-STARTTLS") } else if case .injectAfterSTARTTLS = behaviour { lines.append("250-STARTTLS") } }
            if auth != nil, tls { lines.append("250-AUTH PLAIN") }
            lines.append("250 8BITMIME")
            for l in lines { send(context, l) }
        case "STARTTLS":
            let injecting: Bool
            if case .injectAfterSTARTTLS = behaviour { injecting = true } else { injecting = false }
            guard case .starttls = behaviour, let sslContext = self.context else {
                guard injecting, let sslContext = self.context else { return send(context, "502 5.5.1 no") }
                send(context, "220 2.0.0 Ready to start TLS\r\n250 injected\r\n235 injected")
                tls = true
                try? context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext), position: .first)
                return
            }
            send(context, "220 2.0.0 Ready to start TLS")
            tls = true
            try? context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext), position: .first)
        case "QUIT":
            send(context, "221 2.0.0 Bye")
            context.close(promise: nil)
        case "AUTH":
            let parts = line.split(separator: " ")
            guard let auth, parts.count == 3, parts[1].uppercased() == "PLAIN", let raw = Data(base64Encoded: String(parts[2])) else {
                return send(context, "504 5.5.4 unrecognised authentication")
            }
            let fields = raw.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            guard fields.count == 3, fields[1] == auth.user, fields[2] == auth.password else { return send(context, "535 5.7.8 authentication failed") }
            user = fields[1]
            send(context, "235 2.7.0 authenticated")
        case "MAIL":
            if auth != nil, user == nil { return send(context, "530 5.7.0 authentication required") }
            send(context, "250 OK")
        case "DATA":
            inData = true
            send(context, "354 go ahead")
        default:
            send(context, "250 OK")
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}
