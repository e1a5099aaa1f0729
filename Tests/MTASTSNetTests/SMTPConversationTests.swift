import Foundation
import MTASTSNet
import MTASTSCore
import SwiftASN1
import X509
import NIOCore
import NIOSSL
import Testing
import TestSupport

/// The one SMTP client (probe and submission share it), against the test MX in process.
@Suite struct SMTPConversationTests {
    static func trusting(_ ca: TestCA) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates([try NIOSSLCertificate(bytes: Array(ca.pem.utf8), format: .pem)])
        return try NIOSSLContext(configuration: tls)
    }

    @Test func aCommandHoldingCRLFIsNeverWritten() async throws {
        let log = MailLog()
        let server = try TestServer.mx(address: "127.0.0.1", port: TestServer.freePort(), hostname: "mx.test", leaf: nil, behaviour: .noSTARTTLS, mail: log)
        let refused: SMTPConversation.Failure? = try await SMTPConversation.run(host: server.address, port: server.port, stepTimeout: .seconds(5)) { smtp in
            #expect(try await smtp.reply(step: "banner").code == 220)
            try await smtp.command("EHLO client.test", expect: 250...250)
            do {
                try await smtp.command("RCPT TO:<x@victim.test>\r\nDATA")
                return nil
            } catch let failure as SMTPConversation.Failure {
                try await smtp.command("NOOP", expect: 250...250)
                return failure
            }
        }
        #expect(refused == .unsafeCommand("RCPT"))
        #expect(log.dialogue == ["EHLO client.test", "NOOP"])
    }

    @Test func aTarpitIsCutOffAtTheStepThatStalls() async throws {
        let server = try TestServer.mx(address: "127.0.0.1", port: TestServer.freePort(), hostname: "mx.test", leaf: nil, behaviour: .stallAfterBanner)
        await #expect(throws: SMTPConversation.Failure.timeout("to EHLO")) {
            // Long enough that a loaded machine still sends the banner in time; the EHLO step never answers.
            try await SMTPConversation.run(host: server.address, port: server.port, stepTimeout: .seconds(2)) { smtp in
                _ = try await smtp.reply(step: "banner")
                try await smtp.command("EHLO client.test")
            }
        }
    }

    @Test func anEndlessReplyIsRefusedNotBuffered() async throws {
        let server = try TestServer.mx(address: "127.0.0.1", port: TestServer.freePort(), hostname: "mx.test", leaf: nil, behaviour: .endlessReply)
        await #expect(throws: SMTPConversation.Failure.malformed("a reply of more than 128 lines to EHLO")) {
            try await SMTPConversation.run(host: server.address, port: server.port, stepTimeout: .seconds(5)) { smtp in
                _ = try await smtp.reply(step: "banner")
                try await smtp.command("EHLO client.test")
            }
        }
    }

    @Test func startTLSThenTheConversationGoesOnEncrypted() async throws {
        let ca = try TestCA()
        let log = MailLog()
        let server = try TestServer.mx(address: "127.0.0.1", port: TestServer.freePort(), hostname: "mx.test", leaf: ca.issue(dnsNames: ["mx.test"]), behaviour: .starttls, mail: log)
        let context = try Self.trusting(ca)
        let version = try await SMTPConversation.run(host: server.address, port: server.port, stepTimeout: .seconds(5)) { smtp in
            _ = try await smtp.reply(step: "banner")
            let ehlo = try await smtp.command("EHLO client.test", expect: 250...250)
            #expect(ehlo.lines.contains("STARTTLS"))
            try await smtp.command("STARTTLS", expect: 220...220)
            let version = try await smtp.startTLS { try NIOSSLClientHandler(context: context, serverHostname: "mx.test") }
            try await smtp.command("EHLO client.test", expect: 250...250)
            try await smtp.command("MAIL FROM:<a@client.test>", expect: 250...250)
            try await smtp.command("RCPT TO:<b@mx.test>", expect: 250...250)
            try await smtp.command("DATA", expect: 354...354)
            _ = try await smtp.data(Array("Subject: t\n\n.leading dot\nbody\n".utf8))
            return version
        }
        #expect(version?.hasPrefix("TLSv1.") == true)
        #expect(log.messages.first?.tls == true)
        #expect(log.messages.first?.data == "Subject: t\n\n..leading dot\nbody\n")  // the test MX keeps the line as sent: dot-stuffed
    }

    @Test("a STARTTLS injection (plaintext behind the 220) is refused before the handshake")
    func plaintextAfterSTARTTLSIsRefused() async throws {
        let ca = try TestCA()
        let server = try TestServer.mx(address: "127.0.0.1", port: TestServer.freePort(), hostname: "mx.test", leaf: ca.issue(dnsNames: ["mx.test"]), behaviour: .injectAfterSTARTTLS)
        let context = try Self.trusting(ca)
        await #expect(throws: SMTPConversation.Failure.plaintextAfterSTARTTLS) {
            try await SMTPConversation.run(host: server.address, port: server.port, stepTimeout: .seconds(5)) { smtp in
                _ = try await smtp.reply(step: "banner")
                try await smtp.command("EHLO client.test", expect: 250...250)
                try await smtp.command("STARTTLS", expect: 220...220)
                _ = try await smtp.startTLS { try NIOSSLClientHandler(context: context, serverHostname: "mx.test") }
            }
        }
    }

    @Test("a server name NIOSSL refuses (an IP address as SNI) is an error, never a leaked promise")
    func tlsSetupFailureIsAnError() async throws {
        let ca = try TestCA()
        let server = try TestServer.mx(address: "127.0.0.1", port: TestServer.freePort(), hostname: "mx.test", leaf: ca.issue(dnsNames: ["mx.test"]), behaviour: .starttls)
        let context = try Self.trusting(ca)
        await #expect(throws: SMTPConversation.Failure.self) {
            try await SMTPConversation.run(host: server.address, port: server.port, stepTimeout: .seconds(5)) { smtp in
                _ = try await smtp.reply(step: "banner")
                try await smtp.command("EHLO client.test", expect: 250...250)
                try await smtp.command("STARTTLS", expect: 220...220)
                _ = try await smtp.startTLS { try NIOSSLClientHandler(context: context, serverHostname: "192.0.2.1") }
            }
        }
    }

    @Test func aHandshakeWithAnUntrustedCertificateFails() async throws {
        let ca = try TestCA(), other = try TestCA(commonName: "someone else")
        let server = try TestServer.mx(address: "127.0.0.1", port: TestServer.freePort(), hostname: "mx.test", leaf: ca.issue(dnsNames: ["mx.test"]), behaviour: .starttls)
        let context = try Self.trusting(other)
        await #expect(throws: NIOSSLError.self) {
            try await SMTPConversation.run(host: server.address, port: server.port, stepTimeout: .seconds(5)) { smtp in
                _ = try await smtp.reply(step: "banner")
                try await smtp.command("EHLO client.test", expect: 250...250)
                try await smtp.command("STARTTLS", expect: 220...220)
                _ = try await smtp.startTLS { try NIOSSLClientHandler(context: context, serverHostname: "mx.test") }
            }
        }
    }
}

/// Certificate verdicts as Postfix reports them (issue: sender-side safety, item 8).
@Suite struct CertificateVerdictTests {
    /// A checker that trusts `ca` alone.
    static func checker(trusting ca: TestCA) throws -> CertificateChecker {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("verdict-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return try CertificateChecker(systemRoots: false, extraPEMFiles: [try ca.writePEM(to: dir)])
    }

    @Test("an expired certificate that chains to a trusted root is certificate-expired, even when its CA was not yet valid at the leaf's dates")
    func expiredIsExpired() async throws {
        let ca = try TestCA()
        let checker = try Self.checker(trusting: ca)
        for validity in [TestCA.Validity.expired, .longAgo] {
            let leaf = try ca.issue(dnsNames: ["mx.test"], validity: validity)
            let (verdict, _) = await checker.check(chain: [try leaf.der()], host: "mx.test")
            guard case .invalid(let type, _) = verdict else { Issue.record("\(validity): \(verdict)"); continue }
            #expect(type == .certificateExpired, "\(validity): \(verdict)")
        }
        // Another CA's certificate is not trusted, whatever its dates.
        let stranger = try TestCA(commonName: "stranger").issue(dnsNames: ["mx.test"], validity: .expired)
        let (verdict, _) = await checker.check(chain: [try stranger.der()], host: "mx.test")
        guard case .invalid(let type, _) = verdict else { Issue.record("\(verdict)"); return }
        #expect(type == .certificateNotTrusted)
    }

    @Test("a certificate whose extended key usage leaves out serverAuth is refused, as OpenSSL refuses it")
    func clientAuthOnly() async throws {
        let ca = try TestCA()
        let checker = try Self.checker(trusting: ca)
        let client = try ca.issue(dnsNames: ["mx.test"], usages: [.clientAuth])
        let (verdict, _) = await checker.check(chain: [try client.der()], host: "mx.test")
        guard case .invalid(let type, let why) = verdict else { Issue.record("\(verdict)"); return }
        #expect(type == .validationFailure && why.contains("serverAuth"))
        let server = try ca.issue(dnsNames: ["mx.test"])
        #expect(await checker.check(chain: [try server.der()], host: "mx.test").0 == .valid)
    }
}
