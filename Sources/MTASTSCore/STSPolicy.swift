/// `mode` of an MTA-STS policy (RFC 8461 §5).
public enum STSMode: String, Sendable, Hashable, CaseIterable {
    case enforce, testing, none
}

/// An MTA-STS policy as a sender applies it (RFC 8461 §3.2).
public struct STSPolicy: Hashable, Sendable {
    public var mode: STSMode
    /// The effective lifetime in seconds, at most `maxAgeLimit`.
    public var maxAge: Int
    /// The `mx` patterns, in the order of the policy, duplicates removed.
    public var mx: [MXPattern]
    /// Unknown fields, first occurrence of each (ignored by senders).
    public var extensions: [RecordField]

    /// RFC 8461 §3.2: "maximum value of 31557600".
    public static let maxAgeLimit = 31_557_600
    /// RFC 8461 §3.3 MAY: a body size limit (64 KiB suggested).
    public static let maxBodySize = 65_536

    public init(mode: STSMode, maxAge: Int, mx: [MXPattern], extensions: [RecordField] = []) {
        self.mode = mode
        self.maxAge = maxAge
        self.mx = mx
        self.extensions = extensions
    }

    /// Does an MX host name match one of the patterns (RFC 8461 §4.1)?
    public func matches(_ host: DomainName) -> Bool { mx.contains { $0.matches(host) } }

    /// The policy's lines, one field each: the `policy-string` of an RFC 8460 report.
    public var lines: [String] {
        ["version: STSv1", "mode: \(mode.rawValue)"] + mx.map { "mx: \($0.text)" } + ["max_age: \(maxAge)"]
            + extensions.map { "\($0.name): \($0.value)" }
    }

    /// The policy file text; CRLF by default, as the RFC text writes it (LF is accepted too).
    public func render(lineEnding: String = "\r\n") -> String {
        lines.map { $0 + lineEnding }.joined()
    }

    /// The outcome of parsing a policy body. `policy` is what a sender applies (nil: the policy is
    /// invalid, `sts-policy-invalid`); `diagnostics` is everything a linter shows, with line numbers.
    /// A policy can be usable and still have lint errors (a `max_age` above the maximum is capped).
    public struct ParseResult: Sendable {
        public var policy: STSPolicy?
        public var diagnostics: [Diagnostic]
        /// The `max_age` as written, before capping.
        public var declaredMaxAge: UInt64?
        public var isValid: Bool { policy != nil && diagnostics.errors.isEmpty }
    }

    public static func parse(_ text: String) -> ParseResult { parse(Array(text.utf8)) }

    /// A policy in the form `render(lineEnding: "\n")` writes (what the policy cache stores):
    /// `version`, `mode`, the `mx` lines in lower case, `max_age` within the limit, nothing else.
    /// Read without the linter's work (no diagnostics, no strings per line); anything else, an
    /// extension included, is nil and the caller parses it fully.
    /// An `mx` value in the form the parser keeps (lower-case LDH labels of 1 to 63 octets, no
    /// '-' at either end, an optional `*.` before them: what `MXPattern(strict:)` keeps), or nil.
    static func canonicalPattern(_ value: UnsafeBufferPointer<UInt8>) -> MXPattern? {
        var body = value[...]
        if value.count > 2, value[0] == UInt8(ascii: "*"), value[1] == UInt8(ascii: ".") { body = value[2...] }
        guard DomainName.isPlainLDH(body) else { return nil }
        return MXPattern(canonical: String(decoding: value, as: UTF8.self))
    }

    public static func parseCanonical(_ text: String) -> STSPolicy? {
        var text = text
        return text.withUTF8 { bytes -> STSPolicy? in
            var i = 0
            let n = bytes.count
            guard n <= maxBodySize else { return nil }
            func line(after prefix: StaticString) -> Range<Int>? {
                let p = prefix.utf8Start
                let m = prefix.utf8CodeUnitCount
                guard n - i > m else { return nil }
                for k in 0..<m where bytes[i + k] != p[k] { return nil }
                let start = i + m
                var end = start
                while end < n, bytes[end] != 0x0A { end += 1 }
                guard end < n, end > start else { return nil }
                i = end + 1
                return start..<end
            }
            guard let version = line(after: "version: "), version.count == 5,
                  bytes[version.lowerBound] == UInt8(ascii: "S"), bytes[version.lowerBound + 4] == UInt8(ascii: "1"),
                  bytes[version.lowerBound + 1] == UInt8(ascii: "T"), bytes[version.lowerBound + 2] == UInt8(ascii: "S"),
                  bytes[version.lowerBound + 3] == UInt8(ascii: "v"),
                  let modeRange = line(after: "mode: "),
                  let mode = STSMode(rawValue: String(decoding: UnsafeBufferPointer(rebasing: bytes[modeRange]), as: UTF8.self)) else { return nil }
            var mx: [MXPattern] = []
            while let r = line(after: "mx: ") {
                guard let pattern = canonicalPattern(UnsafeBufferPointer(rebasing: bytes[r])), !mx.contains(pattern) else { return nil }
                mx.append(pattern)
            }
            guard let age = line(after: "max_age: "), i == n, age.count <= 10 else { return nil }
            var maxAge = 0
            for k in age {
                guard bytes[k] >= 0x30, bytes[k] <= 0x39 else { return nil }
                maxAge = maxAge * 10 + Int(bytes[k] - 0x30)
            }
            guard maxAge <= maxAgeLimit, mode == .none || !mx.isEmpty else { return nil }
            return STSPolicy(mode: mode, maxAge: maxAge, mx: mx)
        }
    }

    /// Parses a policy body (RFC 8461 §3.2 ABNF): LF or CRLF lines, `key:` then optional WSP then the
    /// value, trailing WSP allowed, no leading WSP, no empty lines, at most one final terminator; keys
    /// and fixed values case-sensitive; unknown keys ignored; for repeated keys other than `mx` the
    /// first occurrence is honoured.
    public static func parse(_ body: [UInt8]) -> ParseResult {
        var diagnostics: [Diagnostic] = []
        var fatal = false
        func fail(_ code: String, _ message: String, line: Int? = nil) {
            diagnostics.append(Diagnostic(.error, code, message, line: line))
            fatal = true
        }
        guard !body.isEmpty else {
            return ParseResult(policy: nil, diagnostics: [Diagnostic(.error, "empty", "the policy is empty")])
        }
        if body.count > maxBodySize {
            fail("too-large", "the policy is \(body.count) bytes; senders read at most \(maxBodySize)")
        }
        guard let text = String(validating: body, as: UTF8.self) else {
            return ParseResult(policy: nil, diagnostics: diagnostics + [Diagnostic(.error, "not-utf8", "the policy is not valid UTF-8")])
        }
        var lines = text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false)
        if lines.count > 1 && lines.last!.isEmpty { lines.removeLast() }  // one final terminator

        var version: String?
        var mode: STSMode?
        var maxAge: UInt64?
        var mx: [MXPattern] = []
        var extensions: [RecordField] = []
        var seen: Set<String> = []

        for (index, rawLine) in lines.enumerated() {
            let n = index + 1
            var line = rawLine
            if line.last == 0x0D { line = line.dropLast() }
            if line.contains(0x0D) {
                fail("bare-cr", "a carriage return not followed by a line feed; lines end in LF or CRLF", line: n)
                continue
            }
            if line.isEmpty {
                fail("empty-line", index == lines.count - 1 ? "more than one line terminator at the end" : "an empty line; the grammar allows none", line: n)
                continue
            }
            if index == 0 && line.starts(with: [0xEF, 0xBB, 0xBF]) {
                fail("bom", "the policy begins with a byte-order mark (U+FEFF); remove it", line: n)
                continue
            }
            if line.first == 0x20 || line.first == 0x09 {
                fail("leading-space", "the line begins with white space", line: n)
                continue
            }
            guard let colon = line.firstIndex(of: 0x3A) else {
                fail("not-a-field", "'\(String(decoding: line, as: UTF8.self))' is not a 'key: value' line", line: n)
                continue
            }
            let key = String(decoding: line[..<colon], as: UTF8.self)
            let value = String(decoding: line[line.index(after: colon)...], as: UTF8.self).trimmingWSP()
            if key.last == " " || key.last == "\t" {
                fail("space-before-colon", "white space before ':' in '\(key):'", line: n)
                continue
            }
            guard TXTRecordGrammar.isExtensionName(key) else {
                fail("bad-key", "'\(key)' is not a valid key (letters, digits, '_', '-', '.'; at most 32)", line: n)
                continue
            }
            if key != "mx" && seen.contains(key) {
                diagnostics.append(Diagnostic(.warning, "duplicate-key", "'\(key)' appears again; the first value is used", line: n))
                continue
            }
            seen.insert(key)
            switch key {
            case "version":
                if value == "STSv1" {
                    version = "STSv1"
                } else {
                    fail("bad-version", "version '\(value)' is not 'STSv1' (case-sensitive)", line: n)
                }
            case "mode":
                if let m = STSMode(rawValue: String(value)) {
                    mode = m
                } else if STSMode(rawValue: value.lowercased()) != nil {
                    fail("bad-mode", "mode '\(value)' must be lowercase: enforce, testing or none", line: n)
                } else {
                    fail("bad-mode", "mode '\(value)' is not enforce, testing or none", line: n)
                }
            case "max_age":
                let digits = value.utf8
                if digits.isEmpty || digits.count > 10 || !digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
                    fail("bad-max-age", "max_age '\(value)' must be 1 to 10 digits (seconds)", line: n)
                } else {
                    maxAge = UInt64(value)
                    if maxAge! > UInt64(maxAgeLimit) {
                        // Fits the ABNF, exceeds the stated maximum: a sender caps it (CONFORMANCE
                        // §4 item 17); the linter calls it an error.
                        diagnostics.append(Diagnostic(.error, "max-age-too-large", "max_age \(value) exceeds the maximum 31557600 (one year); senders cap it", line: n))
                    }
                }
            case "mx":
                do {
                    let pattern = try MXPattern(strict: String(value))
                    if mx.contains(pattern) {
                        diagnostics.append(Diagnostic(.warning, "duplicate-mx", "mx '\(value)' is listed twice", line: n))
                    } else {
                        mx.append(pattern)
                    }
                } catch {
                    fail("bad-mx", "mx: \(error)", line: n)
                }
            default:
                if value.isEmpty {
                    fail("empty-value", "the field '\(key)' has no value", line: n)
                } else if value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                    fail("bad-value", "the value of '\(key)' has a control character", line: n)
                } else {
                    extensions.append(RecordField(name: key, value: String(value)))
                    diagnostics.append(Diagnostic(.warning, "unknown-key", "unknown key '\(key)' is ignored by senders", line: n))
                }
            }
        }
        if version == nil && !seen.contains("version") { fail("missing-version", "the required field 'version: STSv1' is missing") }
        if mode == nil && !seen.contains("mode") { fail("missing-mode", "the required field 'mode' is missing") }
        if maxAge == nil && !seen.contains("max_age") { fail("missing-max-age", "the required field 'max_age' is missing") }
        if let mode, mode != .none, mx.isEmpty, !seen.contains("mx") {
            fail("missing-mx", "mode \(mode.rawValue) needs at least one 'mx' line")
        }
        if let maxAge, !fatal {
            if maxAge == 0 {
                diagnostics.append(Diagnostic(.warning, "max-age-zero", "max_age 0: senders cannot cache the policy, so it protects nothing between fetches"))
            } else if maxAge < 86_400 {
                diagnostics.append(Diagnostic(.warning, "max-age-short", "max_age \(maxAge) is under one day; use at least 86400 (testing) or 604800 (enforce)"))
            } else if mode == .enforce && maxAge < 604_800 {
                diagnostics.append(Diagnostic(.info, "max-age-short-enforce", "in enforce mode a max_age of at least 604800 (one week) is advised"))
            }
        }
        if mode == .testing && !fatal {
            diagnostics.append(Diagnostic(.info, "mode-testing", "mode testing: senders report failures but still deliver; switch to enforce once the reports are clean"))
        }
        if mode == STSMode.none && !fatal {
            diagnostics.append(Diagnostic(.info, "mode-none", "mode none: senders treat the domain as having no policy"))
        }
        guard !fatal, let mode, let maxAge, version != nil else {
            return ParseResult(policy: nil, diagnostics: diagnostics, declaredMaxAge: maxAge)
        }
        let policy = STSPolicy(mode: mode, maxAge: Int(min(maxAge, UInt64(maxAgeLimit))), mx: mx, extensions: extensions)
        return ParseResult(policy: policy, diagnostics: diagnostics, declaredMaxAge: maxAge)
    }
}

extension STSPolicy {
    /// A record id derived from the policy content (FNV-1a, 64 bits, in hex): the same policy gives
    /// the same id, a changed policy a new one, so `_mta-sts` changes exactly when the policy does.
    public var contentID: String {
        let hex = String(FNV1a.hash(render().utf8), radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// 64-bit FNV-1a: a small, stable, non-cryptographic hash for ids and tokens.
/// FNV-1a, 64 bits: a short, stable content hash (ids, tokens; not for security).
public enum FNV1a {
    public static func hash<S: Sequence>(_ bytes: S) -> UInt64 where S.Element == UInt8 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return hash
    }
}

extension STSPolicy {
    /// A compact binary form, for a cache that holds many policies in memory: the mode, max_age
    /// and the patterns, each length-prefixed. Nil for a policy with extension fields or patterns
    /// too many or too long for it (such a policy is kept as its text).
    public var compactBytes: [UInt8]? {
        guard extensions.isEmpty, mx.count < 256, mx.allSatisfy({ $0.text.utf8.count < 256 }),
              let mode = STSMode.allCases.firstIndex(of: mode), maxAge >= 0, maxAge <= Self.maxAgeLimit else { return nil }
        var out: [UInt8] = [UInt8(mode)]
        out.reserveCapacity(6 + mx.reduce(0) { $0 + 1 + $1.text.utf8.count })
        withUnsafeBytes(of: UInt32(maxAge).littleEndian) { out.append(contentsOf: $0) }
        out.append(UInt8(mx.count))
        for pattern in mx {
            out.append(UInt8(pattern.text.utf8.count))
            out.append(contentsOf: pattern.text.utf8)
        }
        return out
    }

    /// Reads `compactBytes` back; nil if they are not such bytes (every pattern is checked to be
    /// in the canonical form the parser makes).
    public init?(compact bytes: ArraySlice<UInt8>) {
        var i = bytes.startIndex
        func byte() -> Int? {
            guard i < bytes.endIndex else { return nil }
            defer { i += 1 }
            return Int(bytes[i])
        }
        guard let m = byte(), m < STSMode.allCases.count, bytes.endIndex - i >= 4 else { return nil }
        var age: UInt32 = 0
        for k in 0..<4 { age |= UInt32(bytes[i + k]) << (8 * k) }
        i += 4
        guard age <= Self.maxAgeLimit, let count = byte() else { return nil }
        var mx: [MXPattern] = []
        mx.reserveCapacity(count)
        for _ in 0..<count {
            guard let n = byte(), bytes.endIndex - i >= n else { return nil }
            let pattern = bytes[i..<(i + n)].withUnsafeBufferPointer(Self.canonicalPattern)
            i += n
            guard let pattern, !mx.contains(pattern) else { return nil }
            mx.append(pattern)
        }
        guard i == bytes.endIndex, STSMode.allCases[m] == .none || !mx.isEmpty else { return nil }
        self.init(mode: STSMode.allCases[m], maxAge: Int(age), mx: mx)
    }
}
