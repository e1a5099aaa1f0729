/// TLS outcomes read from Postfix's mail log, for Postfix versions without TLSRPT (3.9 and
/// older). One outcome per delivery attempt of the smtp client: the recipient domain, the MX
/// host and address, the TLS level Postfix logged for the connection, and the failure it gave.
public struct PostfixLogOutcome: Sendable, Equatable {
    public enum TLSLevel: String, Sendable {
        /// "Verified TLS connection established": chain and name checked.
        case verified
        /// "Trusted TLS connection established": chain checked, name not (or not matched).
        case trusted
        /// "Untrusted TLS connection established": the chain did not verify.
        case untrusted
        /// "Anonymous TLS connection established": no certificate.
        case anonymous
        /// No TLS at all on the connection.
        case none
    }

    /// Seconds since 1970 of the delivery line (nil when the line had no time Postfix wrote).
    public var time: Int64?
    public var domain: String
    public var mxHost: String
    public var mxAddress: String?
    public var tls: TLSLevel
    /// The RFC 8460 result type Postfix's own words stand for, when it refused the connection.
    public var failure: ResultType?
    /// The text of the failure (`additional-information`), from Postfix.
    public var detail: String?
    /// The message went (status=sent); false for deferred/bounced.
    public var delivered: Bool
}

/// Reads lines of Postfix's log (syslog or `maillog_file`), keeps per smtp process what it said
/// about the connection, and emits an outcome at each `to=<…>, relay=…, status=…` line.
public struct PostfixLogReader: Sendable {
    struct Connection {
        var tls: PostfixLogOutcome.TLSLevel = .none
        var host: String?
        var verification: String?
        /// Failure lines by queue id ("TLS is required, but was not offered", "Server certificate not verified").
        var failures: [String: String] = [:]
        /// Queue ids already counted (one session per delivery attempt, not per recipient).
        var counted: Set<String> = []
    }

    private var connections: [String: Connection] = [:]
    /// The year for syslog time stamps without one ("Nov 30 01:02:03"), and their zone offset.
    public var defaultYear: Int
    public var utcOffset: Int64

    public init(defaultYear: Int, utcOffset: Int64 = 0) {
        self.defaultYear = defaultYear
        self.utcOffset = utcOffset
    }

    public mutating func read(_ line: String) -> PostfixLogOutcome? {
        // "<time> <host> postfix[-x]/smtp[PID]: <message>"
        guard let tag = line.range(of: "/smtp["), let close = line[tag.upperBound...].firstIndex(of: "]") else { return nil }
        let prefix = line[..<tag.lowerBound]
        guard prefix.range(of: "postfix", options: .backwards) != nil else { return nil }
        let pid = String(line[tag.upperBound..<close])
        guard line[close...].hasPrefix("]: ") else { return nil }
        let message = line[line.index(close, offsetBy: 3)...]
        var c = connections[pid] ?? Connection()
        defer {
            if connections.count > 10_000 { connections.removeAll() }  // bounded: a lost process's state goes
        }
        for level in [("Verified", PostfixLogOutcome.TLSLevel.verified), ("Trusted", .trusted), ("Untrusted", .untrusted), ("Anonymous", .anonymous)] {
            if message.hasPrefix("\(level.0) TLS connection established to ") {
                // A new connection of this process; a verification failure logged during its handshake stays.
                let verification = c.verification
                c = Connection(failures: c.failures, counted: c.counted)
                c.verification = verification
                c.tls = level.1
                let rest = message.dropFirst("\(level.0) TLS connection established to ".count)
                c.host = String(rest.prefix { $0 != "[" && $0 != ":" }).lowercased()
                connections[pid] = c
                return nil
            }
        }
        if message.hasPrefix("server certificate verification failed for ") || message.hasPrefix("certificate verification failed for ") {
            c.verification = String(message.split(separator: ": ", maxSplits: 1).last ?? "")
            connections[pid] = c
            return nil
        }
        // "QUEUEID: …"
        guard let colon = message.firstIndex(of: ":") else { return nil }
        let queueID = String(message[..<colon])
        guard !queueID.isEmpty, queueID.allSatisfy({ $0.isLetter || $0.isNumber }) else { return nil }
        let text = message[message.index(after: colon)...].drop { $0 == " " }
        if text.hasPrefix("TLS is required, but was not offered") || text.hasPrefix("Server certificate not verified")
            || text.hasPrefix("TLS is required, but host") {
            c.failures[queueID] = String(text)
            connections[pid] = c
            return nil
        }
        guard text.hasPrefix("to=<"), let at = text.firstIndex(of: "@"), let end = text[at...].firstIndex(of: ">"),
              let relayRange = text.range(of: ", relay="), let statusRange = text.range(of: "status=") else { return nil }
        let domain = text[text.index(after: at)..<end].lowercased()
        let relay = text[relayRange.upperBound...].prefix { $0 != "," }
        guard relay != "none", let bracket = relay.firstIndex(of: "[") else { return nil }
        let host = relay[..<bracket].lowercased()
        let address = relay[relay.index(after: bracket)...].prefix { $0 != "]" }
        let status = text[statusRange.upperBound...]
        let delivered = status.hasPrefix("sent")
        // A connection that failed before TLS (refused, timed out) is not a TLS session.
        if !delivered, c.failures[queueID] == nil, c.tls == .none, !status.contains("TLS") { return nil }
        guard c.counted.insert(queueID).inserted else {
            connections[pid] = c
            return nil
        }
        var failure: ResultType?
        var detail = c.failures[queueID]
        if let said = detail ?? (status.contains("TLS is required") || status.contains("certificate not verified") ? String(status) : nil) {
            detail = said
            if said.contains("not offered") || said.contains("refused to start TLS") {
                failure = .starttlsNotSupported
            } else if said.contains("not verified") {
                // Postfix: "server certificate verification failed for HOST[IP]:PORT: num=62:hostname mismatch",
                // "num=10:certificate has expired", "untrusted issuer /CN=…", "num=20:unable to get local issuer certificate".
                let v = (c.verification ?? "").lowercased()
                if v.contains("expired") { failure = .certificateExpired }
                else if v.contains("hostname mismatch") || v.contains("name mismatch") { failure = .certificateHostMismatch }
                else if v.contains("issuer") || v.contains("self-signed") || v.contains("self signed") { failure = .certificateNotTrusted }
                else if c.tls == .trusted { failure = .certificateHostMismatch }
                else if c.tls == .untrusted { failure = .certificateNotTrusted }
                else { failure = .validationFailure }
            } else {
                failure = .validationFailure
            }
        }
        let outcome = PostfixLogOutcome(time: time(line), domain: String(domain), mxHost: host, mxAddress: address.isEmpty ? nil : String(address),
                                        tls: c.tls, failure: failure, detail: detail, delivered: delivered)
        // The connection is over: the next delivery of this process starts from nothing (a connection
        // Postfix reuses from its cache logs no new TLS line, and is then counted without TLS).
        c.tls = .none
        c.host = nil
        c.verification = nil
        c.failures[queueID] = nil
        if c.counted.count > 1_000 { c.counted.removeAll() }
        connections[pid] = c
        return outcome
    }

    /// The time stamp at the start of a line: RFC 3339 ("2026-11-30T01:02:03.123456+00:00") or
    /// syslog's ("Nov 30 01:02:03", in `defaultYear` and `utcOffset`).
    func time(_ line: String) -> Int64? {
        let first = line.prefix { $0 != " " }
        if first.count >= 19, first.dropFirst(4).first == "-", let parsed = RFC3339.parse(String(first)) { return parsed.seconds }
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: true)
        guard parts.count >= 3, let month = months.firstIndex(of: String(parts[0])), let day = Int(parts[1]) else { return nil }
        let hms = parts[2].split(separator: ":").compactMap { Int64($0) }
        guard hms.count == 3 else { return nil }
        return RFC3339.epochDays(defaultYear, month + 1, day) * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2] - utcOffset
    }
}
