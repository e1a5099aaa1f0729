/// The field grammar shared by the `_mta-sts` (RFC 8461 §3.1) and `_smtp._tls` (RFC 8460 §3) TXT
/// records: `v=VERSION 1*(*WSP ";" *WSP field) [*WSP ";" *WSP]`, `field = name "=" value`.
enum TXTRecordGrammar {
    static func isWSP(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }
    static func isAlnum(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
    }

    /// `ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")`
    static func isExtensionName<S: StringProtocol>(_ s: S) -> Bool {
        let u = Array(s.utf8)
        guard let first = u.first, isAlnum(first), u.count <= 32 else { return false }
        return u.dropFirst().allSatisfy { isAlnum($0) || $0 == 0x5F || $0 == 0x2D || $0 == 0x2E }
    }

    /// `ext-value = 1*(%x21-3A / %x3C / %x3E-7E)`: printable ASCII without `;`, `=` or space.
    static func isExtensionValue<S: StringProtocol>(_ s: S) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { $0 >= 0x21 && $0 <= 0x7E && $0 != 0x3B && $0 != 0x3D }
    }

    typealias Field = RecordField

    /// Splits a record into its fields after the version tag. Grammar violations are errors;
    /// white space after the last field (outside the grammar, harmless) is a warning.
    static func fields(of record: String, version: String, kind: String) -> (fields: [Field]?, diagnostics: [Diagnostic]) {
        var diagnostics: [Diagnostic] = []
        guard record.utf8.allSatisfy({ $0 < 0x80 }) else {
            return (nil, [Diagnostic(.error, "not-ascii", "the record has non-ASCII characters; TXT records are US-ASCII")])
        }
        guard record.hasPrefix(version) else {
            let trimmed = record.drop(while: { $0 == " " || $0 == "\t" })
            if trimmed.lowercased().hasPrefix(version.lowercased()) {
                return (nil, [Diagnostic(.error, "bad-version", "the record must begin with exactly '\(version)' (case-sensitive, no leading space)")])
            }
            return (nil, [Diagnostic(.error, "not-\(kind)-record", "the record does not begin with '\(version)'; it is not a \(kind == "sts" ? "MTA-STS" : "TLS-RPT") record")])
        }
        var rest = Substring(record.dropFirst(version.count))
        let leading = rest.prefix(while: { $0 == " " || $0 == "\t" })
        rest = rest.dropFirst(leading.count)
        guard rest.first == ";" else {
            if rest.isEmpty {
                return (nil, [Diagnostic(.error, "missing-fields", "'\(version)' alone is not a record: fields separated by ';' must follow")])
            }
            return (nil, [Diagnostic(.error, "bad-version", "'\(version)' must be followed by ';' (found '\(version)\(leading)\(rest.prefix(8))'); is the version wrong?")])
        }
        if !leading.isEmpty {
            diagnostics.append(Diagnostic(.warning, "space-before-delimiter", "white space between '\(version)' and ';': senders that filter on the literal '\(version);' drop this record when it is published beside others"))
        }
        let segments = rest.dropFirst().split(separator: ";", omittingEmptySubsequences: false)
        var fields: [Field] = []
        for (index, raw) in segments.enumerated() {
            let isLast = index == segments.count - 1
            var seg = raw.drop(while: { $0 == " " || $0 == "\t" })
            let trailing = seg.reversed().prefix(while: { $0 == " " || $0 == "\t" }).count
            seg = seg.dropLast(trailing)
            if seg.isEmpty {
                if isLast { break }
                diagnostics.append(Diagnostic(.error, "empty-field", "an empty field (two ';' in a row)"))
                continue
            }
            if isLast && trailing > 0 {
                diagnostics.append(Diagnostic(.warning, "trailing-whitespace", "white space after the last field; the grammar allows it only after a ';'"))
            }
            guard let eq = seg.firstIndex(of: "=") else {
                diagnostics.append(Diagnostic(.error, "bad-field", "'\(seg)' is not a name=value field"))
                continue
            }
            let name = seg[..<eq]
            let value = seg[seg.index(after: eq)...]
            guard isExtensionName(name) else {
                diagnostics.append(Diagnostic(.error, "bad-field-name", "'\(name)' is not a valid field name (a letter or digit, then up to 31 letters, digits, '_', '-', '.')"))
                continue
            }
            fields.append(Field(name: String(name), value: String(value)))
        }
        return (fields, diagnostics)
    }
}

/// A `name=value` field of a TXT record.
public struct RecordField: Hashable, Sendable {
    public var name: String
    public var value: String
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// Choosing the one record from a TXT RRset (RFC 8461 §3.1, RFC 8460 §3).
public enum TXTRecordSet {
    /// Each resource record is a list of character-strings; RFC 8461 §3.1 and RFC 8460 §3 join them
    /// with nothing in between.
    public static func join(_ strings: [String]) -> String { strings.joined() }

    public enum Selection: Equatable, Sendable {
        case none
        case one(String)
        case several([String])
    }

    /// Selects the record to parse. A lone RR is parsed as it is (so that a grammatical record with
    /// white space before its first ';' still counts, CONFORMANCE §4 item 10); of several, those that
    /// do not begin with the exact bytes `prefix` (`v=STSv1;`, `v=TLSRPTv1;`) are discarded before
    /// counting, and more than one left means no record.
    /// Selects the one record by `version` and parses it: the shared body of `STSRecord.select`
    /// and `TLSRPTRecord.select`. `consequence` says what having no usable record means.
    static func selectAndParse<R>(_ rrset: [[String]], version: String, consequence: String, parse: (String) -> (R?, [Diagnostic])) -> (record: R?, diagnostics: [Diagnostic]) {
        switch select(rrset, prefix: version + ";") {
        case .none:
            return (nil, [Diagnostic(.error, "no-record", "no TXT record begins with '\(version);'")])
        case .several(let all):
            return (nil, [Diagnostic(.error, "multiple-records", "\(all.count) records begin with '\(version);'; exactly one is allowed, so \(consequence)")])
        case .one(let text):
            return parse(text)
        }
    }

    public static func select(_ records: [[String]], prefix: String) -> Selection {
        let joined = records.map(join)
        if joined.count == 1 { return .one(joined[0]) }
        let kept = joined.filter { $0.hasPrefix(prefix) }
        switch kept.count {
        case 0: return .none
        case 1: return .one(kept[0])
        default: return .several(kept)
        }
    }
}
