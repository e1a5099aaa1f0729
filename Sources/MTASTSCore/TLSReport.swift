/// An SMTP TLS report (RFC 8460 §4).
public struct TLSReport: Sendable, Equatable {
    public var organizationName: String?
    /// `date-range.start-datetime`, Unix seconds.
    public var startDate: Int64
    /// `date-range.end-datetime`, Unix seconds.
    public var endDate: Int64
    public var contactInfo: String?
    public var reportID: String?
    public var policies: [PolicyResult]

    public init(organizationName: String?, startDate: Int64, endDate: Int64, contactInfo: String?, reportID: String?, policies: [PolicyResult]) {
        self.organizationName = organizationName
        self.startDate = startDate
        self.endDate = endDate
        self.contactInfo = contactInfo
        self.reportID = reportID
        self.policies = policies
    }

    /// Sums saturate (at `Int.max`): each count is at most 2^53−1, but a report may hold many.
    public var totalSuccessful: Int { policies.reduce(0) { $0.saturatingAdd($1.successfulSessions) } }
    public var totalFailed: Int { policies.reduce(0) { $0.saturatingAdd($1.failedSessions) } }
}

public struct PolicyResult: Sendable, Equatable {
    public var policy: ReportPolicy
    public var successfulSessions: Int
    public var failedSessions: Int
    public var failureDetails: [FailureDetail]

    public init(policy: ReportPolicy, successfulSessions: Int, failedSessions: Int, failureDetails: [FailureDetail] = []) {
        self.policy = policy
        self.successfulSessions = successfulSessions
        self.failedSessions = failedSessions
        self.failureDetails = failureDetails
    }
}

public struct ReportPolicy: Sendable, Equatable, Hashable {
    public var type: PolicyType
    /// `policy-string`: for STS one policy line per element; for TLSA one RR per element.
    public var strings: [String]
    /// `policy-domain` (A-label).
    public var domain: String?
    /// `mx-host`: the policy's MX patterns (STS).
    public var mxHosts: [String]

    public init(type: PolicyType, strings: [String] = [], domain: String?, mxHosts: [String] = []) {
        self.type = type
        self.strings = strings
        self.domain = domain
        self.mxHosts = mxHosts
    }
}

public struct FailureDetail: Sendable, Equatable, Hashable {
    public var resultType: ResultType
    public var sendingMTAIP: String?
    public var receivingMXHostname: String?
    public var receivingMXHelo: String?
    public var receivingIP: String?
    public var failedSessionCount: Int
    public var additionalInformation: String?
    public var failureReasonCode: String?

    public init(resultType: ResultType, sendingMTAIP: String? = nil, receivingMXHostname: String? = nil, receivingMXHelo: String? = nil, receivingIP: String? = nil, failedSessionCount: Int, additionalInformation: String? = nil, failureReasonCode: String? = nil) {
        self.resultType = resultType
        self.sendingMTAIP = sendingMTAIP
        self.receivingMXHostname = receivingMXHostname
        self.receivingMXHelo = receivingMXHelo
        self.receivingIP = receivingIP
        self.failedSessionCount = failedSessionCount
        self.additionalInformation = additionalInformation
        self.failureReasonCode = failureReasonCode
    }
}

/// Why bytes are not a TLS report.
public struct NotAReport: Error, Sendable, CustomStringConvertible, Equatable {
    public var reason: String
    /// The input was refused for its size (compressed or inflated), not its content.
    public var tooLarge: Bool
    public init(_ reason: String, tooLarge: Bool = false) {
        self.reason = reason
        self.tooLarge = tooLarge
    }
    public var description: String { reason }
}

// MARK: - Decoding

extension TLSReport {
    /// A decoded report with every deviation from RFC 8460 that was tolerated.
    public struct Decoded: Sendable {
        public var report: TLSReport
        public var diagnostics: [Diagnostic]
    }

    /// Decodes report JSON tolerantly (what real senders send, see interop/README.md) and lists each
    /// deviation. Throws only when the bytes cannot be a report (not JSON, no date range, no policies).
    public static func decode(json bytes: [UInt8]) throws(NotAReport) -> Decoded {
        let value: JSONValue
        var diagnostics: [Diagnostic] = []
        do {
            let parsed = try JSONParser.parse(bytes)
            value = parsed.value
            for deviation in parsed.deviations {
                diagnostics.append(Diagnostic(.warning, "not-i-json", deviation))
            }
        } catch {
            throw NotAReport("not JSON: \(error)")
        }
        return try decode(value, diagnostics: diagnostics)
    }

    public static func decode(_ value: JSONValue, diagnostics initial: [Diagnostic] = []) throws(NotAReport) -> Decoded {
        var d = ReportDecoder(diagnostics: initial)
        guard case .object = value else { throw NotAReport("the JSON document is \(value.typeName == "array" ? "an" : "a") \(value.typeName), not a report object") }
        guard let range = value["date-range"] else { throw NotAReport("no 'date-range': not a TLS report") }
        guard case .object = range else { throw NotAReport("'date-range' is not an object") }
        let start = try d.date(range["start-datetime"], "start-datetime")
        let end = try d.date(range["end-datetime"], "end-datetime")
        if end < start { d.warn("bad-date-range", "end-datetime is before start-datetime") }

        var policiesValue = value["policies"]
        if policiesValue == nil, let alt = value["policy"] {
            d.warn("policies-misnamed", "'policy' used where RFC 8460 names the member 'policies'")
            policiesValue = alt
        }
        let items: [JSONValue]
        switch policiesValue {
        case .array(let a)?: items = a
        case .object?:
            d.warn("policies-not-array", "'policies' is a bare object; RFC 8460 requires an array")
            items = [policiesValue!]
        case nil: throw NotAReport("no 'policies': not a TLS report")
        default: throw NotAReport("'policies' is a \(policiesValue!.typeName), not an array")
        }

        var policies: [PolicyResult] = []
        for (index, item) in items.enumerated() {
            guard case .object = item else {
                d.warn("bad-policy-entry", "policies[\(index)] is not an object; skipped")
                continue
            }
            policies.append(d.policyResult(item, index: index))
        }
        let organization = d.string(value["organization-name"], "organization-name", required: true)
        let contact = d.string(value["contact-info"], "contact-info", required: true)
        let reportID = d.string(value["report-id"], "report-id", required: true)
        if let invalid = d.invalid { throw NotAReport(invalid) }
        let report = TLSReport(organizationName: organization, startDate: start, endDate: end, contactInfo: contact, reportID: reportID, policies: policies)
        return Decoded(report: report, diagnostics: d.diagnostics)
    }
}

private struct ReportDecoder {
    var diagnostics: [Diagnostic]
    /// The first reason the report is not one (a count out of range); decoding goes on to the end
    /// and then refuses the report with it.
    var invalid: String?

    mutating func warn(_ code: String, _ message: String) { diagnostics.append(Diagnostic(.warning, code, message)) }
    mutating func note(_ code: String, _ message: String) { diagnostics.append(Diagnostic(.info, code, message)) }

    mutating func date(_ value: JSONValue?, _ name: String) throws(NotAReport) -> Int64 {
        guard let text = value?.stringValue else { throw NotAReport("'date-range.\(name)' is missing or not a string") }
        guard let parsed = RFC3339.parse(text) else { throw NotAReport("'date-range.\(name)' is not a date-time: '\(text)'") }
        if parsed.hadNoZone {
            warn("date-without-zone", "\(name) '\(text)' has no time zone; read as UTC")
        }
        return parsed.seconds
    }

    mutating func string(_ value: JSONValue?, _ name: String, required: Bool = false) -> String? {
        switch value {
        case .string(let s)?: return s
        case nil, .null?:
            if required { warn("missing-\(name)", "'\(name)' is \(value == nil ? "missing" : "null")") }
            return nil
        case .int(let v)?:
            warn("not-a-string", "'\(name)' is a number, not a string")
            return String(v)
        case let other?:
            warn("not-a-string", "'\(name)' is a \(other.typeName), not a string; ignored")
            return nil
        }
    }

    /// Session counts are integers in 0…2^53−1 (RFC 8460 §4.4 counts; JSON's exact integers,
    /// I-JSON RFC 7493 §2.2). Anything else makes the report invalid: a negative or huge count
    /// would falsify every sum made from it.
    static let maxCount: Int64 = 9_007_199_254_740_991

    mutating func inRange(_ v: Int64, _ name: @autoclosure () -> String) -> Int {
        guard (0...Self.maxCount).contains(v) else {
            if invalid == nil { invalid = "'\(name())' is \(v): a session count must be an integer from 0 to 2^53−1" }
            return 0
        }
        return Int(v)
    }

    mutating func count(_ value: JSONValue?, _ key: String, _ where_: String) -> Int {
        // Fast path first: the name is only written into a warning.
        if case .int(let v)? = value, v >= 0, v <= Self.maxCount { return Int(v) }
        let name = "\(where_): \(key)"
        switch value {
        case .int(let v)?:
            return inRange(v, name)
        case .double(let v)? where v == v.rounded() && abs(v) < 1e15:
            warn("count-not-integer", "'\(name)' is written as a fraction (\(v))")
            return inRange(Int64(v), name)
        case .double(let v)?:
            if invalid == nil { invalid = "'\(name)' is \(v): a session count must be an integer from 0 to 2^53−1" }
            return 0
        case .string(let s)? where Int64(s) != nil:
            warn("count-is-string", "'\(name)' is the string \"\(s)\", not a number")
            return inRange(Int64(s)!, name)
        case nil:
            warn("missing-\(key)", "\(where_): '\(key)' is missing; counted as 0")
            return 0
        case let other?:
            warn("bad-count", "'\(name)' is a \(other.typeName); counted as 0")
            return 0
        }
    }

    mutating func stringArray(_ value: JSONValue?, _ name: String) -> [String] {
        switch value {
        case .array(let items)?:
            var out: [String] = []
            for item in items {
                if let s = item.stringValue { out.append(s) } else { warn("bad-\(name)", "an element of '\(name)' is a \(item.typeName), not a string; skipped") }
            }
            return out
        case .string(let s)?:
            warn("\(name)-not-array", "'\(name)' is a string; RFC 8460 requires an array")
            return [s]
        case nil, .null?: return []
        case let other?:
            warn("bad-\(name)", "'\(name)' is a \(other.typeName); ignored")
            return []
        }
    }

    mutating func policyResult(_ item: JSONValue, index: Int) -> PolicyResult {
        let where_ = "policies[\(index)]"
        var policy = ReportPolicy(type: .other(""), domain: nil)
        if case .object? = item["policy"], let p = item["policy"] {
            if let t = string(p["policy-type"], "policy-type") {
                policy.type = PolicyType(t)
                if case .other = policy.type { warn("unknown-policy-type", "\(where_): unknown policy-type '\(t)'") }
            } else {
                warn("missing-policy-type", "\(where_): 'policy-type' is missing")
            }
            policy.strings = stringArray(p["policy-string"], "policy-string")
            if policy.type == .tlsa, policy.strings.count == 1, policy.strings[0].hasPrefix("["),
                let inner = try? JSONParser.parse(Array(policy.strings[0].utf8)).value, case .array(let rrs) = inner
            {
                let strings = rrs.compactMap(\.stringValue)
                if strings.count == rrs.count {
                    warn("policy-string-json-in-string", "\(where_): the TLSA policy-string is a JSON array inside a string (a known Microsoft quirk); expanded")
                    policy.strings = strings
                }
            }
            if p["policy-string"] == nil && policy.type != .noPolicyFound {
                note("missing-policy-string", "\(where_): no 'policy-string'")
            }
            policy.domain = string(p["policy-domain"], "policy-domain")
            if let domain = policy.domain {
                if (try? DomainName(domain)).map({ $0.text == domain.lowercased() }) != true {
                    warn("bad-policy-domain", "\(where_): policy-domain '\(domain)' is not an A-label domain name")
                }
            } else {
                warn("missing-policy-domain", "\(where_): 'policy-domain' is missing")
            }
            if let mx = p["mx-host"] {
                policy.mxHosts = stringArray(mx, "mx-host")
            } else if let mx = p["mx-host-pattern"] {
                warn("mx-host-misnamed", "\(where_): 'mx-host-pattern' used where RFC 8460 names the member 'mx-host'")
                policy.mxHosts = stringArray(mx, "mx-host-pattern")
            }
        } else {
            warn("missing-policy", "\(where_): no 'policy' object")
        }
        var successful = 0
        var failed = 0
        if case .object? = item["summary"], let s = item["summary"] {
            successful = count(s["total-successful-session-count"], "total-successful-session-count", where_)
            failed = count(s["total-failure-session-count"], "total-failure-session-count", where_)
        } else {
            warn("missing-summary", "\(where_): no 'summary' object; counted as 0")
        }
        var details: [FailureDetail] = []
        switch item["failure-details"] {
        case .array(let entries)?:
            for entry in entries {
                guard case .object = entry else {
                    warn("bad-failure-detail", "\(where_): a failure-details entry is not an object; skipped")
                    continue
                }
                details.append(failureDetail(entry, where_))
            }
        case nil, .null?: break
        case let other?: warn("bad-failure-details", "\(where_): 'failure-details' is a \(other.typeName); ignored")
        }
        let sum = details.reduce(0) { $0.saturatingAdd($1.failedSessionCount) }
        if !details.isEmpty && sum != failed {
            note("failure-count-mismatch", "\(where_): failure-details add up to \(sum), the summary says \(failed)")
        }
        return PolicyResult(policy: policy, successfulSessions: successful, failedSessions: failed, failureDetails: details)
    }

    mutating func failureDetail(_ e: JSONValue, _ where_: String) -> FailureDetail {
        var type = ResultType.other("")
        if let t = string(e["result-type"], "result-type") {
            type = ResultType(t)
            if !type.isRegistered { warn("unknown-result-type", "\(where_): result-type '\(t)' is not in the IANA registry; kept as it is") }
        } else {
            warn("missing-result-type", "\(where_): a failure detail has no 'result-type'")
        }
        var info = string(e["additional-information"], "additional-information")
        if info == nil, let alt = string(e["additional-info-uri"], "additional-info-uri") {
            warn("additional-information-misnamed", "\(where_): 'additional-info-uri' used where RFC 8460 names the member 'additional-information'")
            info = alt
        }
        return FailureDetail(
            resultType: type,
            sendingMTAIP: string(e["sending-mta-ip"], "sending-mta-ip"),
            receivingMXHostname: string(e["receiving-mx-hostname"], "receiving-mx-hostname"),
            receivingMXHelo: string(e["receiving-mx-helo"], "receiving-mx-helo"),
            receivingIP: string(e["receiving-ip"], "receiving-ip"),
            failedSessionCount: count(e["failed-session-count"], "failed-session-count", where_),
            additionalInformation: info,
            failureReasonCode: string(e["failure-reason-code"], "failure-reason-code"))
    }
}

// MARK: - Encoding

extension TLSReport {
    /// The canonical JSON form: RFC 8460 key names and order, dates as RFC 3339 UTC with `Z`,
    /// `policy-string` and `mx-host` always arrays, absent optional members left out. Written
    /// straight from the report (no tree).
    public func writeCanonical(to w: inout JSONWriter) {
        w.beginObject()
        w.member("organization-name", organizationName)
        w.key("date-range")
        w.beginObject()
        w.member("start-datetime", RFC3339.format(startDate))
        w.member("end-datetime", RFC3339.format(endDate))
        w.endObject()
        w.member("contact-info", contactInfo)
        w.member("report-id", reportID)
        w.key("policies")
        w.beginArray()
        for p in policies { p.writeCanonical(to: &w) }
        w.endArray()
        w.endObject()
    }

    /// The canonical JSON as a tree (for callers that read it).
    public var canonicalJSON: JSONValue {
        // What the writer wrote parses: a failure here is a bug in the writer.
        (try? JSONParser.parse(encoded()).value) ?? .null
    }

    /// The canonical JSON as UTF-8 bytes.
    public func encoded(pretty: Bool = false) -> [UInt8] {
        var w = JSONWriter(pretty: pretty)
        writeCanonical(to: &w)
        return w.bytes
    }
}

extension PolicyResult {
    func writeCanonical(to w: inout JSONWriter) {
        w.beginObject()
        w.key("policy")
        w.beginObject()
        w.member("policy-type", policy.type.rawValue)
        if !policy.strings.isEmpty {
            w.key("policy-string")
            w.beginArray()
            for s in policy.strings { w.string(s) }
            w.endArray()
        }
        w.member("policy-domain", policy.domain)
        if !policy.mxHosts.isEmpty {
            w.key("mx-host")
            w.beginArray()
            for h in policy.mxHosts { w.string(h) }
            w.endArray()
        }
        w.endObject()
        w.key("summary")
        w.beginObject()
        w.key("total-successful-session-count")
        w.int(Int64(successfulSessions))
        w.key("total-failure-session-count")
        w.int(Int64(failedSessions))
        w.endObject()
        if !failureDetails.isEmpty {
            w.key("failure-details")
            w.beginArray()
            for d in failureDetails { d.writeCanonical(to: &w) }
            w.endArray()
        }
        w.endObject()
    }
}

extension FailureDetail {
    func writeCanonical(to w: inout JSONWriter) {
        w.beginObject()
        w.member("result-type", resultType.rawValue)
        w.member("sending-mta-ip", sendingMTAIP)
        w.member("receiving-mx-hostname", receivingMXHostname)
        w.member("receiving-mx-helo", receivingMXHelo)
        w.member("receiving-ip", receivingIP)
        w.key("failed-session-count")
        w.int(Int64(failedSessionCount))
        w.member("additional-information", additionalInformation)
        w.member("failure-reason-code", failureReasonCode)
        w.endObject()
    }
}

extension FixedWidthInteger where Self: SignedInteger {
    /// `self + other`, held at `max`/`min` instead of trapping.
    public func saturatingAdd(_ other: Self) -> Self {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }
}
