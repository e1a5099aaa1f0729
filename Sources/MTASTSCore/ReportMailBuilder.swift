/// Builds a report message per RFC 8460 §5.3: `multipart/report; report-type="tlsrpt"`, a human
/// part and the gzip report, the `TLS-Report-Domain`/`TLS-Report-Submitter` headers and the
/// conventional subject. Lines end in CRLF. DKIM signing is a separate step over these bytes.
public struct ReportMailBuilder: Sendable {
    public var report: TLSReport
    /// The policy domain the report is for (its `policy-domain`).
    public var policyDomain: String
    /// The reporting domain (the domain of `contact-info`).
    public var submitter: String
    public var from: String
    public var to: String
    /// Unix seconds for the Date header.
    public var date: Int64
    public var compress: Bool
    /// More header fields (complete lines), such as `TLS-Required: No` (RFC 8689).
    public var extraHeaders: [String] = []

    public init(report: TLSReport, policyDomain: String, submitter: String, from: String, to: String, date: Int64, compress: Bool = true) {
        self.report = report
        self.policyDomain = policyDomain
        self.submitter = submitter
        self.from = from
        self.to = to
        self.date = date
        self.compress = compress
    }

    /// A stable, alphanumeric token derived from the report id (boundary, filename unique-id).
    var token: String {
        String(FNV1a.hash((report.reportID ?? "\(report.startDate)\(policyDomain)").utf8), radix: 36)
    }

    public var filename: ReportFilename {
        ReportFilename(sender: submitter, policyDomain: policyDomain, begin: report.startDate, end: report.endDate, uniqueID: token, compressed: compress)
    }

    public var subject: ReportSubject {
        let id = report.reportID ?? token
        return ReportSubject(domain: policyDomain, submitter: submitter, reportID: id.contains("@") ? id : "\(token)@\(submitter)")
    }

    /// The message; throws when a header value would hold CR, LF or NUL (whatever it came from:
    /// DNS, the configuration, collected data), so no header can be added by a value.
    public func build() throws(MailHeader.Unsafe) -> [UInt8] {
        let json = report.encoded()
        let payload = compress ? Gzip.compress(json) : json
        let boundary = "tlsrpt-\(token)"
        for extra in extraHeaders { _ = try MailHeader.line(extra, "") }
        var lines: [String] = [
            try MailHeader.line("From", from),
            try MailHeader.line("To", to),
            "Subject: \(subject.folded)",
            "Date: \(RFC5322Date.format(date))",
            try MailHeader.line("Message-ID", "<\(token).\(report.startDate)@\(submitter)>"),
            "MIME-Version: 1.0",
            try MailHeader.line("TLS-Report-Domain", policyDomain),
            try MailHeader.line("TLS-Report-Submitter", submitter),
        ] + extraHeaders + [
            "Content-Type: multipart/report; report-type=\"tlsrpt\";",
            "\tboundary=\"\(boundary)\"",
            "",
            "This is a multipart message in MIME format.",
            "",
            "--\(boundary)",
            "Content-Type: text/plain; charset=\"us-ascii\"",
            "Content-Transfer-Encoding: 7bit",
            "",
            "This is an aggregate TLS report from \(submitter) for \(policyDomain),",
            "covering \(RFC3339.format(report.startDate)) to \(RFC3339.format(report.endDate)):",
            "\(report.totalSuccessful) successful and \(report.totalFailed) failed sessions.",
            "",
            "--\(boundary)",
            "Content-Type: application/tlsrpt+\(compress ? "gzip" : "json")",
            "Content-Transfer-Encoding: base64",
            "Content-Disposition: attachment;",
            "\tfilename=\"\(filename)\"",
            "",
        ]
        lines.append(Base64.encode(payload))
        lines.append("--\(boundary)--")
        lines.append("")
        return Array(lines.joined(separator: "\r\n").utf8)
    }
}

/// RFC 5322 §3.3 dates, always in UTC: `Sun, 29 Nov 2026 21:10:29 +0000`.
public enum RFC5322Date {
    public static func format(_ seconds: Int64) -> String {
        let iso = RFC3339.format(seconds)  // YYYY-MM-DDTHH:MM:SSZ
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][Int(((days % 7) + 7) % 7)]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let parts = iso.split(separator: "T")
        let ymd = parts[0].split(separator: "-")
        let month = months[Int(ymd[1])! - 1]
        return "\(weekday), \(Int(ymd[2])!) \(month) \(ymd[0]) \(parts[1].dropLast()) +0000"
    }
}

/// Whether text holds CR, LF or NUL: what must never reach a header line or an SMTP command
/// (both writers ask this one question).
public func breaksLine(_ text: String) -> Bool {
    text.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 }
}

/// The one checked writer of header lines: a value (or a complete line) holding CR, LF or NUL is
/// refused, never written.
public enum MailHeader {
    public struct Unsafe: Error, CustomStringConvertible, Sendable {
        public var name: String
        public var description: String { "refused to write the \(name) header: its value holds CR, LF or NUL" }
    }

    /// `Name: value`; `value` empty with a complete line in `name` checks that line.
    public static func line(_ name: String, _ value: String) throws(Unsafe) -> String {
        guard !breaksLine(name), !breaksLine(value) else {
            throw Unsafe(name: String(name.prefix(while: { $0 != ":" && $0 != "\r" && $0 != "\n" }).prefix(40)))
        }
        return value.isEmpty ? name : "\(name): \(value)"
    }
}
