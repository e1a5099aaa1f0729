/// The `_mta-sts.<domain>` TXT record (RFC 8461 §3.1).
public struct STSRecord: Hashable, Sendable {
    /// The policy instance id: 1 to 32 letters and digits, compared for equality only.
    public var id: String
    /// Extension fields, in order, first occurrence of each name only (ignored by senders).
    public var extensions: [RecordField]

    public init(id: String, extensions: [RecordField] = []) {
        self.id = id
        self.extensions = extensions
    }

    public static let version = "v=STSv1"

    /// The record text this library would publish.
    public var text: String { "v=STSv1; id=\(id);" }

    /// The outcome of parsing one record: the record when it is usable, with every finding.
    public struct ParseResult: Sendable {
        public var record: STSRecord?
        public var diagnostics: [Diagnostic]
    }

    /// Parses one record (the strings of one RR already joined).
    public static func parse(_ text: String) -> ParseResult {
        var (parsed, diagnostics) = TXTRecordGrammar.fields(of: text, version: version, kind: "sts")
        guard let fields = parsed else { return ParseResult(record: nil, diagnostics: diagnostics) }
        var record: STSRecord?
        var seen: Set<String> = []
        var extensions: [RecordField] = []
        for field in fields {
            if seen.contains(field.name) {
                if !TXTRecordGrammar.isExtensionValue(field.value) {
                    diagnostics.append(Diagnostic(.error, "bad-field-value", "the value of the repeated field '\(field.name)' is not valid"))
                } else {
                    diagnostics.append(Diagnostic(.warning, "duplicate-field", "'\(field.name)' appears more than once; the first value is used"))
                }
                continue
            }
            seen.insert(field.name)
            if field.name == "id" {
                let u = field.value.utf8
                if u.isEmpty || u.count > 32 || !u.allSatisfy(TXTRecordGrammar.isAlnum) {
                    diagnostics.append(Diagnostic(.error, "bad-id", "id '\(field.value)' must be 1 to 32 letters or digits"))
                } else {
                    record = STSRecord(id: field.value)
                }
            } else {
                if !TXTRecordGrammar.isExtensionValue(field.value) {
                    diagnostics.append(Diagnostic(.error, "bad-field-value", "the value '\(field.value)' of '\(field.name)' is empty or has a space, '=', ';' or a control character"))
                } else {
                    extensions.append(field)
                    diagnostics.append(Diagnostic(.warning, "unknown-field", "unknown field '\(field.name)' is ignored"))
                }
            }
        }
        if !seen.contains("id") {
            diagnostics.append(Diagnostic(.error, "missing-id", "the required field 'id' is missing"))
        }
        if !diagnostics.errors.isEmpty { record = nil }
        record?.extensions = extensions
        return ParseResult(record: record, diagnostics: diagnostics)
    }

    /// RRset selection then parsing: nil when the domain has no available policy record.
    public static func select(_ rrset: [[String]]) -> (record: STSRecord?, diagnostics: [Diagnostic]) {
        TXTRecordSet.selectAndParse(rrset, version: version, consequence: "senders see no policy") { text in
            let result = parse(text)
            return (result.record, result.diagnostics)
        }
    }
}
