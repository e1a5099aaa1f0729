import Foundation
import Logging
import MTASTSConfig
import MTASTSCore
import MTASTSNet
import ServerSupport
import TLSRPTReceiver

/// One alert: what changed, about which domain, in words, with a link to the page that shows it.
public struct Alert: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// A domain's daily success rate fell below the threshold.
        case successRate = "success-rate"
        /// One result type's failures jumped on the newest day.
        case failureJump = "failure-jump"
        /// A result type never reported for the domain before.
        case newFailureType = "new-failure-type"
        /// A sending organisation never seen reporting on the domain before.
        case newOrganization = "new-organization"
        /// A policy host or MX certificate expires within the configured days (or has expired).
        case certificateExpiring = "certificate-expiring"
        /// The periodic check found an error (policy fetch, record, MX).
        case checkError = "check-error"
        /// The readiness verdict turned `ready`: enforce may be safe.
        case readiness
        /// More alerts at once than `AlertEngine.maxPerEvaluation`: the rest in one.
        case digest
    }

    public var domain: String
    public var kind: Kind
    /// What within the domain: a result type, an organisation, a host, an error code; "" for the domain itself.
    public var subject: String
    public var message: String
    public var link: String?

    public init(domain: String, kind: Kind, subject: String, message: String, link: String?) {
        self.domain = domain
        self.kind = kind
        self.subject = subject
        self.message = message
        self.link = link
    }
}

/// A condition as evaluated now: the state it is in, and the alert to raise when it enters a
/// state that alerts.
struct Condition {
    var domain: String
    var kind: Alert.Kind
    var subject: String
    var state: String
    /// Nil: this state does not alert (the condition is back to normal, or was never alerting).
    var message: String?
}

/// Evaluates the alert conditions over the stored reports and the latest checks, compares each
/// with the state it was last seen in (kept in the database), and raises an alert once per change
/// into an alerting state; the alerts go to every webhook (JSON POST) and mail recipient.
public final class AlertEngine: Sendable {
    public let rules: ServeConfig.Alerts
    let publicURL: String?
    let reports: ReportStore
    let watch: WatchStore
    let logger: Logger
    let clock: any WallClock
    let pool: BlockingPool
    /// The owner's domains: only their reports can alert (anyone can POST a report about any
    /// domain); nil: every domain in the stored reports.
    let domains: Set<String>?
    let deliver: @Sendable (Alert) async -> String
    /// Alerts sent one by one in one evaluation; the rest go in one digest.
    public static let maxPerEvaluation = 20

    /// `deliver` sends one alert and says how it went (`serve` passes `AlertTransports.send`).
    public init(rules: ServeConfig.Alerts, publicURL: String?, reports: ReportStore, watch: WatchStore, logger: Logger,
                clock: any WallClock = SystemClock(), pool: BlockingPool = .shared, domains: Set<String>? = nil,
                deliver: @escaping @Sendable (Alert) async -> String) {
        self.rules = rules
        self.publicURL = publicURL
        self.reports = reports
        self.watch = watch
        self.logger = logger
        self.clock = clock
        self.pool = pool
        self.domains = domains
        self.deliver = deliver
    }

    /// A value from a stranger's report (organisation, result type) as it goes into an alert:
    /// control characters out, at most 120 characters.
    static func clean(_ s: String) -> String {
        let kept = printable(s)
        return kept.count > 120 ? String(kept.prefix(119)) + "…" : kept
    }

    /// Control characters (CR, LF, NUL, …) as spaces: what goes into a mail line or a chat message.
    static func printable(_ s: String) -> String {
        String(String.UnicodeScalarView(s.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : $0 }))
    }

    func link(_ path: String) -> String? { publicURL.map { $0 + path } }

    static func percent(_ rate: Double) -> String { String(format: "%.2f %%", rate * 100) }

    /// The conditions over the stored reports: the newest day's success rate and failure jumps,
    /// failure types and organisations seen, and the readiness verdict; each domain with a report
    /// in the last 8 days.
    func reportConditions() throws -> [Condition] {
        let today = Int64(clock.now())
        let until = RFC3339.formatDay(today), since = RFC3339.formatDay(today - 7 * 86_400)
        var out: [Condition] = []
        for domain in try reports.overview(since: since, until: until) where domains?.contains(domain.domain) ?? true {
            let d = domain.domain
            if let threshold = rules.successRateBelow, let newest = domain.days.last, let rate = newest.successRate {
                let below = rate * 100 < threshold
                out.append(Condition(domain: d, kind: .successRate, subject: "", state: below ? "below" : "ok",
                                     message: below ? "\(d): the success rate of \(newest.day) (UTC) was \(Self.percent(rate)), below \(threshold) % (\(newest.failed) of \(newest.successful.saturatingAdd(newest.failed)) sessions failed)" : nil))
            }
            let failures = try reports.dailyFailures(domain: d, since: since, until: until)
            if let newestDay = domain.days.last?.day {
                var earlier: [String: Int64] = [:], latest: [String: Int64] = [:]
                let earlierDays = Set(domain.days.map(\.day).filter { $0 < newestDay })
                for f in failures {
                    if f.day == newestDay { latest[f.resultType, default: 0] = latest[f.resultType, default: 0].saturatingAdd(f.sessions) }
                    else if earlierDays.contains(f.day) { earlier[f.resultType, default: 0] = earlier[f.resultType, default: 0].saturatingAdd(f.sessions) }
                }
                for type in Set(latest.keys).union(earlier.keys).sorted() {
                    let now = latest[type] ?? 0
                    let average = earlierDays.isEmpty ? 0 : Double(earlier[type] ?? 0) / Double(earlierDays.count)
                    let jump = now >= rules.failureJumpMinimum && Double(now) >= rules.failureJump * max(average, 1)
                    out.append(Condition(domain: d, kind: .failureJump, subject: type, state: jump ? "jump" : "ok",
                                         message: jump ? "\(d): \(now) sessions failed with \(Self.clean(type)) on \(newestDay) (UTC), against \(String(format: "%.1f", average)) a day over the \(earlierDays.count) day(s) before" : nil))
                }
            }
            if rules.newFailureTypes {
                for type in Set(failures.map(\.resultType)).sorted() {
                    out.append(Condition(domain: d, kind: .newFailureType, subject: type, state: "seen",
                                         message: "\(d): a new failure type is reported: \(Self.clean(type))"))
                }
            }
            if rules.newOrganizations {
                for org in try reports.summary(ReportFilter(domain: d, since: since, until: until)).byOrganization {
                    out.append(Condition(domain: d, kind: .newOrganization, subject: org.organization, state: "seen",
                                         message: "\(d): a new sending organisation reports: \(Self.clean(org.organization)) (\(org.successful) successful, \(org.failed) failed sessions)"))
                }
            }
            if rules.readiness {
                let r = try reports.readiness(domain: d, until: until)
                out.append(Condition(domain: d, kind: .readiness, subject: "", state: r.verdict.rawValue,
                                     message: r.verdict == .ready ? "\(d) is ready for mode: enforce: \(r.daysWithReports.count) days of reports from \(r.organizations.count) organisation(s), no sender would have failed" : nil))
            }
        }
        return out
    }

    /// The conditions over the latest periodic checks: certificates expiring, check errors.
    func checkConditions(_ latest: [String: CheckRecord]) -> [Condition] {
        var out: [Condition] = []
        let now = clock.now()
        for (domain, record) in latest.sorted(by: { $0.key < $1.key }) {
            for cert in record.certificates {
                guard let notAfter = cert.notAfter else { continue }
                let days = Int((Double(notAfter) - now) / 86_400)
                let expiring = days < rules.certificateDays
                let when = days < 0 ? "expired on \(RFC3339.format(notAfter))" : "expires in \(days) day(s), on \(RFC3339.format(notAfter))"
                out.append(Condition(domain: domain, kind: .certificateExpiring, subject: cert.host, state: expiring ? "expiring" : "ok",
                                     message: expiring ? "\(domain): the certificate of \(cert.host) \(when)" : nil))
            }
            if rules.checkErrors {
                let present = Dictionary(record.errors.map { ($0.code, $0.message) }, uniquingKeysWith: { a, _ in a })
                for (code, message) in present.sorted(by: { $0.key < $1.key }) {
                    out.append(Condition(domain: domain, kind: .checkError, subject: code, state: "error",
                                         message: "\(domain): the check found an error: \(code): \(message)"))
                }
            }
        }
        return out
    }

    /// Conditions that vanished (a check error no longer found) go back to `ok` without alerting.
    func cleared(kind: Alert.Kind, current: [Condition], stored: [String: String]) -> [Condition] {
        let seen = Set(current.filter { $0.kind == kind }.map { WatchStore.stateKey($0.domain, $0.subject) })
        return stored.compactMap { key, state in
            guard state != "ok", !seen.contains(key) else { return nil }
            let parts = key.split(separator: "\u{0}", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            return Condition(domain: parts[0], kind: kind, subject: parts.count > 1 ? parts[1] : "", state: "ok", message: nil)
        }
    }

    /// Evaluates every condition once; raises and delivers the alerts of the conditions that
    /// entered an alerting state. Returns the alerts raised. The database work runs on the
    /// blocking pool; each alert's new state and its log row are written in one transaction
    /// before it is delivered (an alert is raised once, even if a webhook is down; its delivery
    /// outcome is kept with it and shown on the dashboard).
    @discardableResult
    public func evaluate(checks: Bool = true, reports includeReports: Bool = true) async throws -> [Alert] {
        let time = clock.now()
        let raised: [(Alert, Int64)] = try await pool.run { [self] in
            var conditions: [Condition] = []
            if includeReports { conditions += try reportConditions() }
            if checks {
                let current = checkConditions(try watch.latest())
                conditions += current
                conditions += cleared(kind: .checkError, current: current, stored: try watch.states(kind: Alert.Kind.checkError.rawValue))
            }
            var storedByKind: [Alert.Kind: [String: String]] = [:]
            var changed: [(Condition, Alert?)] = []
            for condition in conditions {
                if storedByKind[condition.kind] == nil { storedByKind[condition.kind] = try watch.states(kind: condition.kind.rawValue) }
                let key = WatchStore.stateKey(condition.domain, condition.subject)
                guard storedByKind[condition.kind]?[key] != condition.state else { continue }
                storedByKind[condition.kind]?[key] = condition.state
                changed.append((condition, condition.message.map {
                    Alert(domain: condition.domain, kind: condition.kind, subject: Self.clean(condition.subject), message: $0,
                          link: link("/domains/\(Self.pathComponent(condition.domain))"))
                }))
            }
            // At most maxPerEvaluation alerts one by one; the rest in one digest (a report naming
            // a thousand new senders is one message, not a thousand).
            let alerting = changed.compactMap(\.1)
            var out: [(Alert, Int64)] = []
            var sent = 0
            for (condition, alert) in changed {
                try watch.db.transaction {
                    try watch.setState(domain: condition.domain, kind: condition.kind.rawValue, subject: condition.subject, state: condition.state, at: time)
                    if let alert, sent < Self.maxPerEvaluation {
                        out.append((alert, try watch.logAlert(alert, at: time, delivery: "pending")))
                        sent += 1
                    }
                }
            }
            if alerting.count > Self.maxPerEvaluation {
                let rest = alerting.dropFirst(Self.maxPerEvaluation)
                let kinds = Dictionary(grouping: rest, by: \.kind.rawValue).map { "\($0.value.count) \($0.key)" }.sorted().joined(separator: ", ")
                let domainsNamed = Set(rest.map(\.domain)).sorted().prefix(5).joined(separator: ", ")
                let digest = Alert(domain: rest.first?.domain ?? "", kind: .digest, subject: "",
                                   message: "\(rest.count) more alerts (\(kinds)) about \(domainsNamed): see the dashboard", link: link("/"))
                out.append((digest, try watch.logAlert(digest, at: time, delivery: "pending")))
            }
            return out
        }
        for (alert, id) in raised {
            let outcome = await deliver(alert)
            try await pool.run { [watch] in try watch.setDelivery(id: id, outcome) }
            logger.notice("alert \(alert.kind.rawValue) \(alert.domain) \(alert.subject): \(alert.message) (\(outcome))")
        }
        return raised.map(\.0)
    }

    static func pathComponent(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._"))) ?? s
    }
}

/// Where alerts go: webhooks (a JSON POST whose `text` member chat services show as it is) and
/// mail by SMTP submission.
public struct AlertTransports: Sendable {
    let webhooks: [String]
    let https: HTTPSTransport?
    let mailTo: [String]
    let mailFrom: String
    let submission: SubmissionTransport?

    public init(_ rules: ServeConfig.Alerts, ehloName: String = "mtasts.invalid") throws {
        webhooks = rules.webhooks
        // A webhook is the owner's own configuration, not a stranger's record: private addresses are allowed.
        https = rules.webhooks.isEmpty ? nil : try HTTPSTransport(caFiles: rules.caFiles, timeout: .seconds(15), userAgent: "mtasts-alerts", allowPrivate: true)
        mailTo = rules.mailTo
        mailFrom = rules.mailFrom
        if let server = rules.mailServer, !rules.mailTo.isEmpty {
            submission = try SubmissionTransport(host: server.host, port: server.port, tls: SubmissionTransport.TLSMode(rawValue: rules.mailTLS) ?? .starttls,
                                                 username: rules.mailUsername, password: rules.mailPassword, ehloName: ehloName, caFiles: rules.caFiles,
                                                 timeout: .seconds(30))
        } else {
            submission = nil
        }
    }

    /// The webhook body.
    public static func json(_ alert: Alert, at time: Double) -> [UInt8] {
        JSONValue.object([
            // `text` as chat services read it (Slack's escaping: no <!channel>, no <url|label> from a report).
            JSONMember("text", .string(chatText(alert.message) + (alert.link.map { " — " + $0 } ?? ""))),
            JSONMember("domain", .string(alert.domain)),
            JSONMember("kind", .string(alert.kind.rawValue)),
            JSONMember("subject", .string(alert.subject)),
            JSONMember("message", .string(alert.message)),
            JSONMember("link", alert.link.map { .string($0) } ?? .null),
            JSONMember("at", .string(RFC3339.format(Int64(time)))),
        ]).serializedBytes()
    }

    /// The alert mail (headers through the one checked writer).
    public static func mail(_ alert: Alert, from: String, to: String, at time: Double) throws -> [UInt8] {
        let subject = "[mtasts] \(alert.domain): \(alert.kind.rawValue)\(alert.subject.isEmpty ? "" : " " + alert.subject)"
        let clean = AlertEngine.printable(subject)
        let head = [
            try MailHeader.line("From", from), try MailHeader.line("To", to), try MailHeader.line("Subject", String(clean.prefix(200))),
            "Date: \(RFC5322Date.format(Int64(time)))", "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit", "Auto-Submitted: auto-generated",
        ].joined(separator: "\r\n") + "\r\n"
        // Lines of printable text only (a bare CR or a NUL from a report cannot reach SMTP).
        let text = AlertEngine.printable(alert.message) + "\r\n" + (alert.link.map { "\r\n" + $0 + "\r\n" } ?? "")
        return Array((head + "\r\n" + text).utf8)
    }

    /// Sends one alert everywhere; the outcome in words ("webhook …: delivered; mail …: …").
    public func send(_ alert: Alert, at time: Double) async -> String {
        var outcomes: [String] = []
        if let https {
            let body = Self.json(alert, at: time)
            for (index, hook) in webhooks.enumerated() {
                let outcome = await https.post(hook, body: body, contentType: "application/json")
                // The URL of a chat webhook holds its secret: only its number and host are said.
                let host = URL(string: hook)?.host ?? "?"
                let detail = outcome.detail.replacingOccurrences(of: hook, with: "the webhook")
                outcomes.append("webhook #\(index + 1) (\(host)): \(outcome.kind.rawValue)\(outcome.kind == .delivered ? "" : " (\(detail))")")
            }
        }
        if let submission {
            for to in mailTo {
                do {
                    let message = try Self.mail(alert, from: mailFrom, to: to, at: time)
                    let outcome = await submission.send(message, from: mailFrom, to: to)
                    outcomes.append("mail \(to): \(outcome.kind.rawValue)\(outcome.kind == .delivered ? "" : " (\(outcome.detail))")")
                } catch {
                    outcomes.append("mail \(to): not sent (\(error))")
                }
            }
        }
        return outcomes.isEmpty ? "no destination" : outcomes.joined(separator: "; ")
    }
}

/// Slack's escaping of `&`, `<` and `>` (the characters of its control sequences); other chat
/// services show them as they are.
func chatText(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
}
