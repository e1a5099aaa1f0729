import Foundation
import ServerSupport

import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// What one delivery attempt came to.
public struct DeliveryOutcome: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// Accepted (HTTP 2xx, SMTP 250 after DATA, sendmail exit 0).
        case delivered
        /// Try again later (time-out, 5xx/408/429, connection failure, SMTP 4xx).
        case temporary
        /// Retrying will not help (HTTP 4xx other than 408/429, SMTP 5xx).
        case permanent
    }
    public var kind: Kind
    public var detail: String
    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }
}

/// HTTPS POST of a report (RFC 8460 §5.2): `application/tlsrpt+gzip`; delivered only on 2xx;
/// redirects are not followed; the whole exchange has one deadline.
public struct HTTPSTransport: Sendable {
    let context: NIOSSLContext
    let timeout: TimeAmount
    let userAgent: String
    /// Whether a rua may name a loopback, private, link-local or unique-local address (by literal
    /// or by what its name resolves to): off by default (`reporting.allow_private_rua`).
    let allowPrivate: Bool

    public init(caFiles: [String] = [], timeout: TimeAmount = .seconds(30), userAgent: String = "mtasts", allowPrivate: Bool = false) throws {
        context = try TLSSetup.trustStoreContext(caFiles: caFiles)
        self.timeout = timeout
        self.userAgent = userAgent
        self.allowPrivate = allowPrivate
    }

    public func post(_ uri: String, body: [UInt8], contentType: String = "application/tlsrpt+gzip") async -> DeliveryOutcome {
        guard let url = URL(string: uri), url.scheme?.lowercased() == "https", let host = url.host, !host.isEmpty else {
            return DeliveryOutcome(.permanent, "not an https URL: \(uri)")
        }
        let port = url.port ?? 443
        var path = url.path.isEmpty ? "/" : url.path
        if let q = url.query { path += "?" + q }
        let context = self.context
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        let literal = PublicAddress.isLiteral(bare)
        // The address is chosen here and connected to as checked: a name that resolves to the
        // operator's own network is refused (unless allowed), and cannot change in between.
        let addresses: [String]
        do { addresses = try await BlockingPool.shared.run { PublicAddress.resolve(bare, port: port) } } catch {
            return DeliveryOutcome(.temporary, "\(host): cannot resolve now: \(error)")
        }
        guard !addresses.isEmpty else { return DeliveryOutcome(.temporary, "\(host) does not resolve") }
        let usable = allowPrivate ? addresses : addresses.filter(PublicAddress.isPublic)
        guard let address = usable.first else {
            return DeliveryOutcome(.permanent, "refused: \(host) is \(addresses.joined(separator: ", ")), not a public address (reporting.allow_private_rua allows it)")
        }
        var headers = HTTPHeaders()
        let hostHeader = bare.contains(":") ? "[\(bare)]" : bare  // an IPv6 literal keeps its brackets
        headers.add(name: "Host", value: url.port.map { "\(hostHeader):\($0)" } ?? hostHeader)
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "User-Agent", value: userAgent)
        headers.add(name: "Connection", value: "close")
        do {
            let response = try await HTTPSExchange.run(
                host: address, port: port, tls: { try NIOSSLClientHandler(context: context, serverHostname: literal ? nil : bare) },
                request: HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers), body: body,
                maxBody: 300, overflow: .truncate, connectTimeout: timeout, deadline: timeout)
            let status = response.head.status
            let text = String(decoding: response.body, as: UTF8.self)
            let summary = "HTTP \(status.code)\(text.isEmpty ? "" : ": " + text.prefix(200).replacingOccurrences(of: "\n", with: " "))"
            switch status.code {
            case 200..<300: return DeliveryOutcome(.delivered, summary)
            case 408, 429, 500...: return DeliveryOutcome(.temporary, summary)
            default: return DeliveryOutcome(.permanent, summary)
            }
        } catch HTTPSExchange.Failure.timeout {
            return DeliveryOutcome(.temporary, "timed out: no complete response within \(timeout.nanoseconds / 1_000_000_000) s")
        } catch HTTPSExchange.Failure.closedEarly {
            return DeliveryOutcome(.temporary, "the connection closed without a (complete) response")
        } catch {
            return DeliveryOutcome(.temporary, "\(host):\(port): \(error)")
        }
    }
}

/// Report mail handed to the local MTA's `sendmail` (the default: the MTA queues and retries).
public struct SendmailTransport: Sendable {
    public var path: String
    public init(path: String = "/usr/sbin/sendmail") { self.path = path }

    public func send(_ message: [UInt8], from: String, to: String) -> DeliveryOutcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["-i", "-f", from, "--", to]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        do { try process.run() } catch { return DeliveryOutcome(.temporary, "cannot run \(path): \(error.localizedDescription)") }
        input.fileHandleForWriting.write(Data(message))
        try? input.fileHandleForWriting.close()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let status = process.terminationStatus
        if status == 0 { return DeliveryOutcome(.delivered, "\(path) accepted it") }
        // sysexits: 75 EX_TEMPFAIL and friends are worth a retry; 64–78 others are not.
        let kind: DeliveryOutcome.Kind = [64, 65, 67, 68, 77, 78].contains(status) ? .permanent : .temporary
        return DeliveryOutcome(kind, "\(path) exited \(status)\(said.isEmpty ? "" : ": " + said.prefix(200).trimmingCharacters(in: .whitespacesAndNewlines))")
    }
}

/// Report mail by SMTP submission (RFC 6409): EHLO, STARTTLS (required unless `tls` is `.none`
/// or `.implicit` on port 465), AUTH PLAIN when a user is given, MAIL/RCPT/DATA.
public struct SubmissionTransport: Sendable {
    public enum TLSMode: String, Sendable { case starttls, implicit, none }
    public var host: String
    public var port: Int
    public var tls: TLSMode
    public var username: String?
    public var password: String?
    public var ehloName: String
    let context: NIOSSLContext
    let timeout: TimeAmount

    public init(host: String, port: Int = 587, tls: TLSMode = .starttls, username: String? = nil, password: String? = nil,
                ehloName: String, caFiles: [String] = [], timeout: TimeAmount = .seconds(60)) throws {
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password
        self.ehloName = ehloName
        self.context = try TLSSetup.trustStoreContext(caFiles: caFiles)
        self.timeout = timeout
        if username != nil && tls == .none { throw CredentialsInClear() }
    }

    /// A user and password are never sent without TLS.
    public struct CredentialsInClear: Error, CustomStringConvertible {
        public var description: String { "reporting.mail: a submission user needs tls: starttls or implicit (credentials are never sent in clear)" }
    }

    public func send(_ message: [UInt8], from: String, to: String) async -> DeliveryOutcome {
        let context = self.context, host = self.host, tls = self.tls, ehloName = self.ehloName
        do {
            let makeTLS: @Sendable () throws -> NIOSSLClientHandler = { try NIOSSLClientHandler(context: context, serverHostname: host) }
            let implicit = tls == .implicit ? makeTLS : nil
            return try await SMTPConversation.run(host: host, port: port, stepTimeout: timeout, deadline: timeout, implicitTLS: implicit) { smtp in
                let banner = try await smtp.reply(step: "to the connection (banner)")
                guard banner.code == 220 else { throw SMTPConversation.Failure.reply(step: "to the connection", code: banner.code, text: banner.text) }
                var ext = try await smtp.command("EHLO \(ehloName)", expect: 250...250).lines.dropFirst()
                if tls == .starttls {
                    guard ext.contains(where: { $0.uppercased().hasPrefix("STARTTLS") }) else {
                        return DeliveryOutcome(.temporary, "\(host):\(port): \(host) does not offer STARTTLS (tls: starttls requires it)")
                    }
                    try await smtp.command("STARTTLS", expect: 220...220)
                    _ = try await smtp.startTLS(makeTLS)
                    ext = try await smtp.command("EHLO \(ehloName)", expect: 250...250).lines.dropFirst()
                }
                if let username {
                    // Credentials only over TLS (the initializer refuses tls: none with a user), and
                    // only to a server that offers AUTH PLAIN.
                    guard ext.contains(where: { $0.uppercased().hasPrefix("AUTH") && $0.uppercased().contains("PLAIN") }) else {
                        return DeliveryOutcome(.temporary, "\(host):\(port): the server does not offer AUTH PLAIN")
                    }
                    let token = Data(([0] + Array(username.utf8) + [0] + Array((password ?? "").utf8))).base64EncodedString()
                    try await smtp.command("AUTH PLAIN \(token)", expect: 235...235)
                }
                try await smtp.command("MAIL FROM:<\(from)>", expect: 250...250)
                try await smtp.command("RCPT TO:<\(to)>", expect: 250...251)
                try await smtp.command("DATA", expect: 354...354)
                let done = try await smtp.data(message)
                await smtp.send("QUIT")
                return DeliveryOutcome(.delivered, "250 \(done.text.prefix(200))")
            }
        } catch let failure as SMTPConversation.Failure {
            switch failure {
            case .reply(_, let code, _): return DeliveryOutcome(code >= 500 ? .permanent : .temporary, "\(host):\(port): \(failure)")
            case .unsafeCommand: return DeliveryOutcome(.permanent, "\(host):\(port): \(failure)")
            default: return DeliveryOutcome(.temporary, "\(host):\(port): \(failure)")
            }
        } catch {
            return DeliveryOutcome(.temporary, "\(host):\(port): \(error)")
        }
    }
}
