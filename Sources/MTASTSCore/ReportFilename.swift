/// The report filename of RFC 8460 §5.1:
/// `sender "!" policy-domain "!" begin-timestamp "!" end-timestamp ["!" unique-id] "." ("json" / "json.gz")`.
public struct ReportFilename: Sendable, Equatable, CustomStringConvertible {
    public var sender: String
    public var policyDomain: String
    public var begin: Int64
    public var end: Int64
    public var uniqueID: String?
    public var compressed: Bool

    public init(sender: String, policyDomain: String, begin: Int64, end: Int64, uniqueID: String?, compressed: Bool) {
        self.sender = sender
        self.policyDomain = policyDomain
        self.begin = begin
        self.end = end
        self.uniqueID = uniqueID
        self.compressed = compressed
    }

    public var description: String {
        "\(sender)!\(policyDomain)!\(begin)!\(end)" + (uniqueID.map { "!\($0)" } ?? "") + (compressed ? ".json.gz" : ".json")
    }

    /// Parses a filename; returns the reason it does not follow §5.1 otherwise.
    public static func parse(_ name: String) -> Result<ReportFilename, NotAReport> {
        // On the UTF-8 bytes: every delimiter is ASCII, and a byte view is much cheaper than
        // Characters.
        let compressed: Bool
        let stem: Substring.UTF8View
        let bytes = name.utf8
        if bytes.count >= 8, bytes.suffix(8).elementsEqual(".json.gz".utf8) {
            compressed = true
            stem = Substring(name).utf8.dropLast(8)
        } else if bytes.count >= 5, bytes.suffix(5).elementsEqual(".json".utf8) {
            compressed = false
            stem = Substring(name).utf8.dropLast(5)
        } else {
            return .failure(NotAReport("'\(name)': the extension must be .json or .json.gz"))
        }
        let fields = stem.split(separator: UInt8(ascii: "!"), omittingEmptySubsequences: false).map { Substring($0) }
        guard fields.count == 4 || fields.count == 5 else {
            return .failure(NotAReport("'\(name)': expected sender!policy-domain!begin!end[!unique-id]"))
        }
        guard (try? DomainName(String(fields[0]))) != nil, (try? DomainName(String(fields[1]))) != nil else {
            return .failure(NotAReport("'\(name)': the sender and policy domain must be domain names (A-labels)"))
        }
        guard let begin = Int64(fields[2]), let end = Int64(fields[3]), begin >= 0, end >= begin else {
            return .failure(NotAReport("'\(name)': the timestamps must be Unix seconds, begin ≤ end"))
        }
        var unique: String?
        if fields.count == 5 {
            guard !fields[4].isEmpty, fields[4].utf8.allSatisfy(TXTRecordGrammar.isAlnum) else {
                return .failure(NotAReport("'\(name)': the unique-id must be letters and digits"))
            }
            unique = String(fields[4])
        }
        return .success(ReportFilename(sender: String(fields[0]), policyDomain: String(fields[1]), begin: begin, end: end, uniqueID: unique, compressed: compressed))
    }
}

/// The Subject convention of RFC 8460 §5.3:
/// `Report Domain: <d> Submitter: <s> Report-ID: <id>`.
public struct ReportSubject: Sendable, Equatable {
    public var domain: String
    public var submitter: String
    public var reportID: String

    public init(domain: String, submitter: String, reportID: String) {
        self.domain = domain
        self.submitter = submitter
        self.reportID = reportID
    }

    public var text: String { "Report Domain: \(domain) Submitter: \(submitter) Report-ID: <\(reportID)>" }

    /// The subject folded (FWS) so that no header line passes 78 characters.
    public var folded: String { "Report Domain: \(domain)\r\n Submitter: \(submitter)\r\n Report-ID: <\(reportID)>" }

    public static func parse(_ subject: String) -> ReportSubject? {
        // Split on bytes ("\r\n" is one Character in Swift; every separator is ASCII).
        let words = Substring(subject).utf8.split(whereSeparator: { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D || $0 == 0x0A })
            .map { Substring($0) }
        guard words.count == 7, words[0] == "Report", words[1] == "Domain:", words[3] == "Submitter:", words[5] == "Report-ID:" else {
            return nil
        }
        var id = Substring(words[6])
        if id.hasPrefix("<") && id.hasSuffix(">") { id = id.dropFirst().dropLast() }
        return ReportSubject(domain: String(words[2]), submitter: String(words[4]), reportID: String(id))
    }
}
