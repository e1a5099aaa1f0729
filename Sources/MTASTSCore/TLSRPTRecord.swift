/// Where a TLS report goes: a `rua` URI of the `_smtp._tls` record (RFC 8460 §3).
public enum ReportURI: Hashable, Sendable, CustomStringConvertible {
    /// `mailto:` with the percent-decoded address.
    case mailto(address: String, uri: String)
    /// `https:`, delivered by POST.
    case https(uri: String)

    public var uri: String {
        switch self {
        case .mailto(_, let uri), .https(let uri): return uri
        }
    }
    public var description: String { uri }

    /// Parses one URI; returns nil with a diagnostic when it cannot be used.
    /// A URI of another scheme is a warning (skipped, CONFORMANCE §4 item 29); a malformed one an error.
    public static func parse(_ uri: String) -> (ReportURI?, Diagnostic?) {
        let bytes = Array(uri.utf8)
        guard let colon = bytes.firstIndex(of: 0x3A), colon > 0,
            TXTRecordGrammar.isAlnum(bytes[0]) && !(bytes[0] >= 0x30 && bytes[0] <= 0x39),
            bytes[..<colon].allSatisfy({ TXTRecordGrammar.isAlnum($0) || $0 == 0x2B || $0 == 0x2D || $0 == 0x2E })
        else {
            return (nil, Diagnostic(.error, "bad-uri", "'\(uri)' is not a URI (mailto:… or https://…)"))
        }
        if let bad = bytes.first(where: { $0 <= 0x20 || $0 >= 0x7F || $0 == 0x21 || $0 == 0x2C || $0 == 0x3B }) {
            let shown = bad <= 0x20 || bad >= 0x7F ? String(format2: bad) : String(UnicodeScalar(bad))
            return (nil, Diagnostic(.error, "bad-uri", "'\(uri)' contains \(shown); ',', '!', ';', spaces and controls must be percent-encoded"))
        }
        guard let decoded = percentDecode(bytes[(colon + 1)...]) else {
            return (nil, Diagnostic(.error, "bad-uri", "'\(uri)' has a '%' not followed by two hexadecimal digits"))
        }
        let scheme = String(decoding: bytes[..<colon], as: UTF8.self).lowercased()
        switch scheme {
        case "mailto":
            // The address ends at the first '?' of the URI as written, before decoding (RFC 6068 §2):
            // an encoded '%3F' or '%40' stays part of the local part, where the mailbox check refuses it.
            let hfields = bytes[(colon + 1)...].firstIndex(of: 0x3F) ?? bytes.endIndex
            let address = percentDecode(bytes[(colon + 1)..<hfields]) ?? ""
            // Percent-decoded, the address must still be a plain mailbox: a record cannot smuggle
            // CR/LF (or '>') into RCPT TO or a To: header.
            let mailbox: String
            do { mailbox = try MailAddress.validate(address) } catch {
                return (nil, Diagnostic(.error, "bad-mailto", "'\(uri)' does not hold a valid address local@domain: \(error.reason)"))
            }
            return (.mailto(address: mailbox, uri: uri), nil)
        case "https":
            guard decoded.hasPrefix("//") else {
                return (nil, Diagnostic(.error, "bad-https", "'\(uri)' must be https://host/path"))
            }
            let authority = decoded.dropFirst(2).prefix(while: { $0 != "/" && $0 != "?" && $0 != "#" })
            var host = authority.split(separator: "@").last.map(String.init) ?? ""
            if let c = host.lastIndex(of: ":"), !host.hasSuffix("]") {
                let port = host[host.index(after: c)...]
                guard !port.isEmpty, port.allSatisfy(\.isASCIIDigit), let p = Int(port), p > 0, p < 65536 else {
                    return (nil, Diagnostic(.error, "bad-https", "'\(uri)' has an invalid port"))
                }
                host = String(host[..<c])
            }
            guard (try? DomainName(host)) != nil || host.hasPrefix("[") else {
                return (nil, Diagnostic(.error, "bad-https", "'\(uri)' does not name a valid host"))
            }
            return (.https(uri: uri), nil)
        default:
            return (nil, Diagnostic(.warning, "unsupported-scheme", "'\(uri)': only mailto: and https: are supported; this URI is skipped"))
        }
    }

    static func percentDecode(_ bytes: ArraySlice<UInt8>) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            if b == 0x25 {
                guard i + 2 < bytes.endIndex,
                    let h = hexValue(bytes[i + 1]), let l = hexValue(bytes[i + 2])
                else { return nil }
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(b)
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

extension String {
    init(format2 byte: UInt8) {
        let hex = Array("0123456789ABCDEF")
        self = "byte 0x" + String(hex[Int(byte >> 4)]) + String(hex[Int(byte & 0xF)])
    }
}

/// The `_smtp._tls.<domain>` TXT record (RFC 8460 §3).
public struct TLSRPTRecord: Hashable, Sendable {
    /// The usable report destinations, in order.
    public var rua: [ReportURI]
    /// Extension fields (ignored).
    public var extensions: [RecordField]

    public init(rua: [ReportURI], extensions: [RecordField] = []) {
        self.rua = rua
        self.extensions = extensions
    }

    public static let version = "v=TLSRPTv1"

    /// The record text this library would publish.
    public var text: String { "v=TLSRPTv1; rua=" + rua.map(\.uri).joined(separator: ",") }

    public struct ParseResult: Sendable {
        public var record: TLSRPTRecord?
        public var diagnostics: [Diagnostic]
    }

    public static func parse(_ text: String) -> ParseResult {
        var (parsed, diagnostics) = TXTRecordGrammar.fields(of: text, version: version, kind: "tlsrpt")
        guard let fields = parsed else { return ParseResult(record: nil, diagnostics: diagnostics) }
        var rua: [ReportURI] = []
        var sawRua = false
        var seen: Set<String> = []
        var extensions: [RecordField] = []
        for field in fields {
            if field.name == "rua" {
                if sawRua {
                    // Several rua fields: the grammar allows it; every URI is kept (delivering to
                    // more destinations cannot change a report's meaning), with a warning.
                    diagnostics.append(Diagnostic(.warning, "duplicate-rua", "several 'rua' fields; list every URI in one 'rua', separated by ','"))
                }
                sawRua = true
                let uris = field.value.split(separator: ",", omittingEmptySubsequences: false)
                    .map { $0.trimmingWSP() }
                for uri in uris {
                    guard !uri.isEmpty else {
                        diagnostics.append(Diagnostic(.error, "empty-uri", "an empty URI in 'rua'"))
                        continue
                    }
                    let (parsedURI, diagnostic) = ReportURI.parse(String(uri))
                    if let diagnostic { diagnostics.append(diagnostic) }
                    if let parsedURI {
                        if rua.contains(parsedURI) {
                            diagnostics.append(Diagnostic(.warning, "duplicate-uri", "'\(uri)' is listed twice"))
                        } else {
                            rua.append(parsedURI)
                        }
                    }
                }
                continue
            }
            if !TXTRecordGrammar.isExtensionValue(field.value) {
                diagnostics.append(Diagnostic(.error, "bad-field-value", "the value '\(field.value)' of '\(field.name)' is empty or has a space, '=', ';' or a control character"))
            } else if seen.contains(field.name) {
                diagnostics.append(Diagnostic(.warning, "duplicate-field", "'\(field.name)' appears more than once; the first value is used"))
            } else {
                seen.insert(field.name)
                extensions.append(field)
                diagnostics.append(Diagnostic(.warning, "unknown-field", "unknown field '\(field.name)' is ignored"))
            }
        }
        if !sawRua {
            diagnostics.append(Diagnostic(.error, "missing-rua", "the required field 'rua' is missing"))
        } else if rua.isEmpty && diagnostics.errors.isEmpty {
            diagnostics.append(Diagnostic(.error, "no-usable-rua", "'rua' has no mailto: or https: URI"))
        }
        let record = diagnostics.errors.isEmpty ? TLSRPTRecord(rua: rua, extensions: extensions) : nil
        return ParseResult(record: record, diagnostics: diagnostics)
    }

    /// RRset selection then parsing: nil when the domain has no usable TLSRPT record.
    public static func select(_ rrset: [[String]]) -> (record: TLSRPTRecord?, diagnostics: [Diagnostic]) {
        TXTRecordSet.selectAndParse(rrset, version: version, consequence: "senders send no reports") { text in
            let result = parse(text)
            return (result.record, result.diagnostics)
        }
    }

    /// The text of the record a sender reports to (RFC 8460 §3: the one record of the RRset that
    /// begins with `v=TLSRPTv1;`, and it must parse), or nil when the domain gets no report. The
    /// text is what a report is kept under, as libtlsrpt passes it.
    public static func selectText(_ rrset: [[String]]) -> String? {
        guard case .one(let text) = TXTRecordSet.select(rrset, prefix: version + ";"), parse(text).record != nil else { return nil }
        return text
    }
}

extension StringProtocol {
    /// Drops spaces and tabs at both ends (by UTF-8 code units: no grapheme breaking).
    func trimmingWSP() -> Substring {
        let whole = Substring(self)
        let u = whole.utf8
        var start = u.startIndex
        var end = u.endIndex
        while start < end, u[start] == 0x20 || u[start] == 0x09 { start = u.index(after: start) }
        while end > start {
            let before = u.index(before: end)
            guard u[before] == 0x20 || u[before] == 0x09 else { break }
            end = before
        }
        return whole[start..<end]
    }
}
