import MTASTSNet
import DKIM
import Foundation
import Logging
import MTASTSCore
import ServerSupport
import Storage

/// Builds the reports of completed days and delivers them to every `rua` URI, with a ledger in
/// the database: which report went where, when, with what result. In a fleet sharing PostgreSQL,
/// a report is claimed by one node (a unique row), and a delivery attempt by one node (a status
/// change only one UPDATE wins).
public final class ReportSender: @unchecked Sendable {
    public enum MailTransport: Sendable {
        case sendmail(SendmailTransport)
        case submission(SubmissionTransport)
    }

    public struct DKIMSigner: Sendable {
        public var domain: String
        public var selector: String
        public var key: DKIM.SigningKey
        public init(domain: String, selector: String, key: DKIM.SigningKey) {
            self.domain = domain
            self.selector = selector
            self.key = key
        }
    }

    public let store: SessionStore
    public let identity: SenderIdentity
    let https: HTTPSTransport
    let mail: MailTransport?
    let dkim: DKIMSigner?
    let node: String
    let logger: Logger
    let clock: any WallClock
    func now() -> Double { clock.now() }

    /// Retries: 1 minute (by default), doubling, until 24 hours after the first attempt (RFC 8460 §5.5).
    public var firstRetry: Double = 60
    public static let giveUpAfter: Double = 86_400

    public init(store: SessionStore, identity: SenderIdentity, https: HTTPSTransport, mail: MailTransport?, dkim: DKIMSigner?,
                node: String, logger: Logger = Logger(label: "reports"), clock: any WallClock = SystemClock()) {
        self.store = store
        self.identity = identity
        self.https = https
        self.mail = mail
        self.dkim = dkim
        self.node = node
        self.logger = logger
        self.clock = clock
    }

    /// Claims the day's reports this node is first to claim and records one pending delivery per
    /// `rua` URI. Returns the reports claimed now (already claimed ones are left to their node).
    @discardableResult
    public func prepare(day: String) throws -> [BuiltReport] {
        let reports = try store.buildReports(day: day, identity: identity)
        var claimed: [BuiltReport] = []
        let t = now()
        for r in reports {
            guard try store.claim(r, node: node, at: t) else { continue }
            claimed.append(r)
            if r.rua.isEmpty { logger.warning("report \(r.reportID): the record '\(r.record)' names no usable rua URI; not sent") }
            if !r.skippedRUA.isEmpty {
                logger.warning("report \(r.reportID): the record names more than \(BuiltReport.maxDestinations) rua URIs; not sent to \(r.skippedRUA.map(\.uri).joined(separator: ", "))")
            }
        }
        return claimed
    }

    public struct Attempt: Sendable {
        public var reportID: String
        public var uri: String
        public var outcome: DeliveryOutcome
        public var status: String
    }

    /// Makes one attempt for every delivery that is due (pending, or retrying and its time has
    /// come, or left "sending" for 10 minutes by a node that died).
    /// The database work and sendmail run on `pool`, never on the caller's thread.
    public func deliverDue(pool: BlockingPool = .shared) async throws -> [Attempt] {
        let t = now()
        let store = self.store, identity = self.identity
        let due = try await pool.run { try store.dueDeliveries(at: t) }
        var builtByDay: [String: [String: BuiltReport]] = [:]
        var attempts: [Attempt] = []
        for item in due {
            let key = item.key, uri = item.uri, day = item.day, previous = item.attempts
            // Only one node takes an attempt.
            guard try await pool.run({ try store.take(key: key, uri: uri, attempts: previous, at: t) }) else { continue }
            if builtByDay[day] == nil {
                let built = try await pool.run { try store.buildReports(day: day, identity: identity) }
                builtByDay[day] = Dictionary(built.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
            }
            guard let report = builtByDay[day]?[key], let target = report.rua.first(where: { $0.uri == uri }) ?? ReportURI.parse(uri).0 else {
                try await pool.run { try store.finish(key: key, uri: uri, attempts: previous + 1, status: "failed", result: "the report or its URI can no longer be built", at: t, first: t) }
                continue
            }
            let outcome = await deliver(report, to: target, pool: pool)
            let attemptsNow = previous + 1
            var status: String
            switch outcome.kind {
            case .delivered: status = "sent"
            case .permanent: status = "failed"
            case .temporary: status = "retry"
            }
            let delay = min(Self.giveUpAfter, firstRetry * pow(2, Double(attemptsNow - 1)))
            let firstTry = item.firstAttempt ?? t
            if status == "retry" && t + delay - firstTry > Self.giveUpAfter { status = "gave-up" }
            let final = status
            try await pool.run { try store.finish(key: key, uri: uri, attempts: attemptsNow, status: final, result: outcome.detail, at: t, first: firstTry, next: t + delay) }
            logger.log(level: status == "sent" ? .info : .warning, "report \(report.reportID) → \(uri): \(status) (\(outcome.detail))")
            attempts.append(Attempt(reportID: report.reportID, uri: uri, outcome: outcome, status: status))
        }
        return attempts
    }

    /// One attempt to one URI.
    public func deliver(_ report: BuiltReport, to uri: ReportURI, pool: BlockingPool = .shared) async -> DeliveryOutcome {
        switch uri {
        case .https(let u):
            return await https.post(u, body: report.gzip)
        case .mailto(let raw, _):
            guard let mail else { return DeliveryOutcome(.permanent, "no mail transport is configured (reporting.mail)") }
            // Checked again here, whatever built the URI: the address goes into RCPT TO and To:.
            let address: String
            do { address = try MailAddress.validate(raw) } catch {
                return DeliveryOutcome(.permanent, "not a valid mailbox (\(error.reason)); not sent")
            }
            let message: [UInt8]
            do { message = try self.message(report, to: address) } catch {
                return DeliveryOutcome(.permanent, "cannot sign the report mail: \(error)")
            }
            switch mail {
            case .sendmail(let s):
                let from = identity.from
                // sendmail is a child process we wait for: off the async threads.
                do { return try await pool.run { s.send(message, from: from, to: address) } } catch {
                    return DeliveryOutcome(.temporary, "sendmail could not be started now: \(error)")
                }
            case .submission(let s): return await s.send(message, from: identity.from, to: address)
            }
        }
    }

    /// The report mail (RFC 8460 §5.3), DKIM-signed when a key is configured. `TLS-Required: No`
    /// (RFC 8689) asks the MTA not to hold the report to a TLS policy, so a broken TLS setup at
    /// the receiver cannot stop the report that tells it so.
    public func message(_ report: BuiltReport, to address: String) throws -> [UInt8] {
        var builder = ReportMailBuilder(report: report.report, policyDomain: report.domain, submitter: identity.submitter,
                                        from: identity.from, to: address, date: Int64(now()))
        builder.extraHeaders = ["TLS-Required: No"]
        let message = try builder.build()
        guard let dkim else { return message }
        return try DKIM.sign(message, domain: dkim.domain, selector: dkim.selector, key: dkim.key,
                             headers: ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "TLS-Report-Domain", "TLS-Report-Submitter", "TLS-Required"])
    }
}
