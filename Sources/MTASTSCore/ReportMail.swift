/// A report as found in some input: the decoded report, where it came from, what was tolerated.
public struct ParsedReport: Sendable {
    public enum Source: String, Sendable {
        case json, gzip, email
    }
    public var decoded: TLSReport.Decoded
    public var source: Source
    /// The JSON bytes of the report as received (after gzip and transfer decoding).
    public var rawJSON: [UInt8]
    /// The attachment's filename, for mail.
    public var filename: String?
    /// The attachment's media type, for mail.
    public var mediaType: String?
    public var report: TLSReport { decoded.report }
    public var diagnostics: [Diagnostic] { decoded.diagnostics }
}

/// What a report message says about itself (RFC 8460 §5.3), for the record.
public struct ReportMailHeaders: Sendable, Equatable {
    public var from: String?
    public var subject: String?
    public var messageID: String?
    public var date: String?
    public var tlsReportDomain: String?
    public var tlsReportSubmitter: String?
    public var dkimSignature: String?
}

/// Reading TLS reports from bytes: JSON, gzip, or an email message (RFC 8460 §5.2, §5.3).
public enum ReportReader {
    /// RFC 8460 §5.2 notes 10 MB as a limit receivers commonly apply to a report.
    public static let defaultMaxSize = 10 * 1024 * 1024

    public struct Result: Sendable {
        public var reports: [ParsedReport]
        /// Findings about the container (mail headers, labels, filenames), not the report JSON.
        public var diagnostics: [Diagnostic]
        public var mail: ReportMailHeaders?
    }

    /// Reads whatever the bytes are. Throws `NotAReport` with a reason when they hold no report.
    /// With `allowMail: false` (an HTTPS POST) the bytes must be the report itself: they are never
    /// parsed as a mail message.
    public static func read(_ bytes: [UInt8], maxSize: Int = defaultMaxSize, allowMail: Bool = true) throws(NotAReport) -> Result {
        func single(_ payload: Payload, source: ParsedReport.Source) -> Result {
            Result(reports: [ParsedReport(decoded: payload.decoded, source: source, rawJSON: payload.json)], diagnostics: [], mail: nil)
        }
        if Gzip.isGzip(bytes) {
            return single(try decodePayload(bytes, maxSize: maxSize), source: .gzip)
        }
        if let first = bytes.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D && $0 != 0x0A }),
            first == UInt8(ascii: "{") || first == UInt8(ascii: "[") || first == 0xEF
        {
            return single(try decodePayload(bytes, maxSize: maxSize), source: .json)
        }
        // A bare base64 text of a gzip report (as some tools save attachments).
        if bytes.count >= 8, bytes.allSatisfy({ b in TXTRecordGrammar.isAlnum(b) || b == 0x2B || b == 0x2F || b == 0x3D || b == 0x0A || b == 0x0D }) {
            let decodedBase64 = Base64.decode(bytes)
            if Gzip.isGzip(decodedBase64) {
                var payload = try decodePayload(decodedBase64, maxSize: maxSize)
                payload.decoded.diagnostics.append(Diagnostic(.warning, "base64-file", "the file is base64 text of a gzip report, not the report itself"))
                return single(payload, source: .gzip)
            }
        }
        guard allowMail else { throw NotAReport("neither JSON nor gzip: post the report itself (application/tlsrpt+gzip or +json)") }
        return try readMail(bytes, maxSize: maxSize)
    }

    /// Report parts read from one message at most; the rest are ignored (a warning says so).
    public static let maxReportParts = 10

    /// A report payload: gzip or JSON, at most `maxSize` bytes of JSON (gzip is inflated no further).
    struct Payload {
        var json: [UInt8]
        var compressed: Bool
        var decoded: TLSReport.Decoded
    }

    static func decodePayload(_ bytes: [UInt8], maxSize: Int) throws(NotAReport) -> Payload {
        let compressed = Gzip.isGzip(bytes)
        let json = compressed ? try inflate(bytes, maxSize: maxSize) : bytes
        if json.count > maxSize { throw NotAReport("the report is larger than \(maxSize) bytes", tooLarge: true) }
        return Payload(json: json, compressed: compressed, decoded: try TLSReport.decode(json: json))
    }

    static func inflate(_ bytes: [UInt8], maxSize: Int) throws(NotAReport) -> [UInt8] {
        do {
            return try Gzip.decompress(bytes, maxSize: maxSize)
        } catch {
            throw NotAReport("gzip: \(error)", tooLarge: error.reason.hasPrefix("the data inflates to more than"))
        }
    }

    /// Reads a report message: every part that carries a report (by media type, by filename, or
    /// by content) is decoded; the human-readable parts are skipped.
    public static func readMail(_ bytes: [UInt8], maxSize: Int = defaultMaxSize) throws(NotAReport) -> Result {
        let message = MIMEPart.parse(bytes)
        guard !message.headers.isEmpty else { throw NotAReport("neither JSON, gzip nor an email message") }
        // One From (RFC 5322 §3.6): with two, a signature could cover one while a reader sees the other.
        if message.headers.filter({ $0.key == "from" }).count > 1 { throw NotAReport("the message has more than one From header") }
        var diagnostics: [Diagnostic] = []
        let headers = ReportMailHeaders(
            from: message.header(key: "from"), subject: message.header(key: "subject"), messageID: message.header(key: "message-id"),
            date: message.header(key: "date"), tlsReportDomain: message.header(key: "tls-report-domain"),
            tlsReportSubmitter: message.header(key: "tls-report-submitter"), dkimSignature: message.header(key: "dkim-signature"))

        var reports: [ParsedReport] = []
        var failures: [String] = []
        // One inflation budget for the whole message: however many gzip parts it carries, they
        // cannot inflate to more in total than one report may.
        var budget = maxSize
        var tried = 0
        for part in message.leaves {
            let type = part.contentType
            let filename = part.filename
            let lowerName = filename?.lowercased() ?? ""
            let labelled = type.subtype.hasPrefix("tlsrpt") || lowerName.hasSuffix(".json") || lowerName.hasSuffix(".json.gz")
            let plausible = labelled || ["gzip", "x-gzip", "json", "octet-stream"].contains(type.subtype) || lowerName.hasSuffix(".gz")
            guard plausible else { continue }
            tried += 1
            guard tried <= maxReportParts, budget > 0 else {
                diagnostics.append(Diagnostic(.warning, "too-many-parts", "more than \(maxReportParts) report parts, or more than \(maxSize) bytes of reports in one message: the rest is ignored"))
                break
            }
            let body = part.decodedBody
            do {
                // Charged as inflated, whether the bytes turn out to be a report or not.
                let compressed = Gzip.isGzip(body)
                let inflated = compressed ? try inflate(body, maxSize: budget) : body
                budget -= inflated.count
                if inflated.count > maxSize { throw NotAReport("the report is larger than \(maxSize) bytes", tooLarge: true) }
                let (json, decoded) = (inflated, try TLSReport.decode(json: inflated))
                var mediaDiagnostics: [Diagnostic] = []
                let essence = type.essence
                if essence == "application/tlsrpt+gzip" && !compressed {
                    mediaDiagnostics.append(Diagnostic(.warning, "mislabelled-part", "the part is labelled application/tlsrpt+gzip but holds plain JSON"))
                } else if essence == "application/tlsrpt+json" && compressed {
                    mediaDiagnostics.append(Diagnostic(.warning, "mislabelled-part", "the part is labelled application/tlsrpt+json but holds gzip"))
                } else if !type.subtype.hasPrefix("tlsrpt+") {
                    mediaDiagnostics.append(Diagnostic(.warning, "report-media-type", "the report part is \(essence), not application/tlsrpt+gzip or +json"))
                }
                if let filename {
                    switch ReportFilename.parse(filename) {
                    case .failure(let why): mediaDiagnostics.append(Diagnostic(.warning, "report-filename", "filename \(why)"))
                    case .success(let f):
                        if f.compressed != compressed {
                            mediaDiagnostics.append(Diagnostic(.warning, "report-filename", "the filename says \(f.compressed ? ".json.gz" : ".json") but the content is \(compressed ? "gzip" : "plain JSON")"))
                        }
                        if f.begin != decoded.report.startDate || f.end != decoded.report.endDate {
                            mediaDiagnostics.append(Diagnostic(.info, "filename-dates", "the filename's timestamps \(f.begin)–\(f.end) differ from the report's date range; the report wins (RFC 8460 §5.6)"))
                        }
                        if let domain = decoded.report.policies.first?.policy.domain, domain.lowercased() != f.policyDomain.lowercased() {
                            mediaDiagnostics.append(Diagnostic(.warning, "filename-mismatch", "the filename names \(f.policyDomain), the report \(domain); the report wins (RFC 8460 §5.6)"))
                        }
                    }
                }
                var withMedia = decoded
                withMedia.diagnostics += mediaDiagnostics
                reports.append(ParsedReport(decoded: withMedia, source: .email, rawJSON: json, filename: filename, mediaType: essence))
            } catch let error as NotAReport {
                if error.tooLarge { budget = 0 }
                if labelled { failures.append("\(type.essence)\(filename.map { " '\($0)'" } ?? ""): \(error.reason)") }
            } catch {
                if labelled { failures.append("\(type.essence): \(error)") }
            }
        }
        guard !reports.isEmpty else {
            if let failure = failures.first { throw NotAReport("the report part is malformed: \(failure)") }
            throw NotAReport("the message holds no TLS report")
        }

        // The container's conventions (RFC 8460 §5.3); the report body wins on disagreement (§5.6).
        let top = message.contentType
        if !(top.essence == "multipart/report" && top.parameters["report-type"]?.lowercased() == "tlsrpt") {
            diagnostics.append(Diagnostic(.warning, "not-multipart-report", "the message is \(top.essence)\(top.parameters["report-type"].map { "; report-type=\($0)" } ?? ""), not multipart/report; report-type=\"tlsrpt\""))
        }
        let report = reports[0].report
        if headers.tlsReportDomain == nil {
            diagnostics.append(Diagnostic(.warning, "missing-tls-report-domain", "no TLS-Report-Domain header"))
        } else if let d = headers.tlsReportDomain, let pd = report.policies.first?.policy.domain, d.lowercased() != pd.lowercased() {
            diagnostics.append(Diagnostic(.warning, "tls-report-domain-mismatch", "TLS-Report-Domain says \(d), the report \(pd); the report wins"))
        }
        if headers.tlsReportSubmitter == nil {
            diagnostics.append(Diagnostic(.warning, "missing-tls-report-submitter", "no TLS-Report-Submitter header"))
        } else if let s = headers.tlsReportSubmitter, let contact = report.contactInfo, let at = contact.lastIndex(of: "@") {
            let contactDomain = contact[contact.index(after: at)...].lowercased()
            if contactDomain != s.lowercased() {
                diagnostics.append(Diagnostic(.warning, "submitter-mismatch", "TLS-Report-Submitter \(s) is not the domain of contact-info \(contact)"))
            }
        }
        if let subject = headers.subject {
            if let parsed = ReportSubject.parse(subject) {
                if let pd = report.policies.first?.policy.domain, parsed.domain.lowercased() != pd.lowercased() {
                    diagnostics.append(Diagnostic(.warning, "subject-mismatch", "the subject names \(parsed.domain), the report \(pd); the report wins"))
                }
            } else {
                diagnostics.append(Diagnostic(.info, "subject-convention", "the subject does not follow 'Report Domain: … Submitter: … Report-ID: …'"))
            }
        }
        return Result(reports: reports, diagnostics: diagnostics, mail: headers)
    }
}
