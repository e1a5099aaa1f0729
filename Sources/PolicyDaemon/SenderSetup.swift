import MTASTSNet
import MTASTSCore
import DKIM
import Foundation
import Logging
import ServerSupport
import MTASTSConfig
import TLSRPTSender

extension ReportingSettings {
    public var identity: SenderIdentity {
        get throws {
            guard let organization else { throw Incomplete(description: "reporting.organization is not set (the organization-name of the reports)") }
            guard let submitter else { throw Incomplete(description: "reporting.submitter is not set (the domain the reports come from)") }
            let from = self.from ?? "noreply-tlsrpt@\(submitter)"
            return SenderIdentity(organization: organization, contact: contact ?? "mailto:\(from)", submitter: submitter, from: from)
        }
    }

    public func makeSender(store: SessionStore, logger: Logger = Log.logger("reports"),
                           clock: any WallClock = SystemClock()) throws -> ReportSender {
        let https = try HTTPSTransport(caFiles: caFiles, timeout: .milliseconds(Int64(httpsTimeout * 1000)), allowPrivate: allowPrivateRUA)
        let mail: ReportSender.MailTransport
        if transport == "smtp", let host = smtpHost {
            mail = .submission(try SubmissionTransport(host: host, port: smtpPort, tls: SubmissionTransport.TLSMode(rawValue: smtpTLS) ?? .starttls,
                                                       username: smtpUser, password: smtpPassword, ehloName: node, caFiles: caFiles))
        } else {
            mail = .sendmail(SendmailTransport(path: sendmail))
        }
        var signer: ReportSender.DKIMSigner?
        if let keyPath = dkimKey {
            guard let pem = try? String(contentsOfFile: keyPath, encoding: .utf8) else { throw Incomplete(description: "reporting.dkim.key: cannot read \(keyPath)") }
            let submitter = try identity.submitter
            signer = ReportSender.DKIMSigner(domain: dkimDomain ?? submitter, selector: dkimSelector, key: try DKIM.SigningKey(pem: pem))
        }
        let sender = ReportSender(store: store, identity: try identity, https: https, mail: mail, dkim: signer, node: node, logger: logger, clock: clock)
        sender.firstRetry = firstRetry
        return sender
    }
}
