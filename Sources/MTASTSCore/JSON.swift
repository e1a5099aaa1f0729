#if canImport(Glibc)
import Glibc
#endif
/// A JSON value, members kept in document order (RFC 8259), from a small strict parser that also
/// notes where a document departs from I-JSON (RFC 7493): duplicate member names, integers beyond
/// ±2^53. Bounded nesting, so hostile input cannot exhaust the stack.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([JSONMember])

    /// The first member of that name, for an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        // Lengths first: most members are not the one looked for, and a length is at hand.
        let length = key.utf8.count
        return members.first(where: { $0.key.utf8.count == length && $0.key == key })?.value
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .int, .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

public struct JSONMember: Sendable, Equatable {
    public var key: String
    public var value: JSONValue
    public init(_ key: String, _ value: JSONValue) {
        self.key = key
        self.value = value
    }
}

public struct JSONParseError: Error, Sendable, CustomStringConvertible, Equatable {
    public var message: String
    public var offset: Int
    public var description: String { "invalid JSON at byte \(offset): \(message)" }
}

public struct JSONParser {
    /// Where the document departs from I-JSON, without failing the parse.
    public private(set) var deviations: [String] = [] {
        didSet { if deviations.count > JSONParser.maxDeviations { deviations.removeLast(deviations.count - JSONParser.maxDeviations) } }
    }
    public static let maxDepth = 64
    /// At most this many values (members and elements, at any depth) in one document: a report
    /// has hundreds, the cap keeps a hostile one's tree bounded whatever its byte size allows.
    public static let maxValues = 1_000_000
    /// Deviations kept (the rest are the same kind of thing again).
    public static let maxDeviations = 100
    private var values = 0

    private let bytes: UnsafeBufferPointer<UInt8>
    private var i = 0
    private var depth = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// Parses a complete document (optionally preceded by a UTF-8 byte-order mark).
    public static func parse(_ data: [UInt8]) throws(JSONParseError) -> (value: JSONValue, deviations: [String]) {
        let result: Result<(JSONValue, [String]), JSONParseError> = data.withUnsafeBufferPointer { buffer in
            var parser = JSONParser(buffer)
            do {
                if buffer.count >= 3 && buffer[0] == 0xEF && buffer[1] == 0xBB && buffer[2] == 0xBF {
                    parser.i = 3
                    parser.deviations.append("the document begins with a byte-order mark")
                }
                let value = try parser.parseValue()
                parser.skipWhitespace()
                if parser.i != buffer.count { throw parser.error("unexpected data after the JSON value") }
                return .success((value, parser.deviations))
            } catch let error as JSONParseError {
                return .failure(error)
            } catch {
                return .failure(JSONParseError(message: "\(error)", offset: 0))
            }
        }
        return try result.get()
    }

    private func error(_ message: String) -> JSONParseError { JSONParseError(message: message, offset: i) }

    private mutating func skipWhitespace() {
        while i < bytes.count {
            let b = bytes[i]
            if b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { i += 1 } else { return }
        }
    }

    private mutating func parseValue() throws(JSONParseError) -> JSONValue {
        values += 1
        if values > JSONParser.maxValues { throw error("more than \(JSONParser.maxValues) values") }
        skipWhitespace()
        guard i < bytes.count else { throw error("unexpected end of input") }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected character")
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw error("unexpected end of input") }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] { throw error("invalid literal") }
        i += n
    }

    private mutating func enter() throws(JSONParseError) {
        depth += 1
        if depth > JSONParser.maxDepth { throw error("nesting deeper than \(JSONParser.maxDepth)") }
    }

    private mutating func parseObject() throws(JSONParseError) -> JSONValue {
        try enter()
        i += 1
        var members: [JSONMember] = []
        members.reserveCapacity(8)
        // Duplicate names are found in linear time: a scan while the object is small, a set after.
        var names: Set<String>?
        skipWhitespace()
        if i < bytes.count && bytes[i] == UInt8(ascii: "}") {
            i += 1
            depth -= 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw error("expected a member name") }
            let key = try parseString(key: true)
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw error("expected ':'") }
            i += 1
            let value = try parseValue()
            let duplicate: Bool
            if names != nil {
                duplicate = !names!.insert(key).inserted  // in place: no copy of the set
            } else {
                duplicate = members.contains(where: { $0.key == key })
                if members.count >= 16 { names = Set(members.map(\.key) + [key]) }
            }
            if duplicate { deviations.append("duplicate member name '\(key.prefix(64))' (the first is used)") }
            members.append(JSONMember(key, value))
            skipWhitespace()
            guard i < bytes.count else { throw error("unexpected end of input in an object") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "}") { i += 1; break }
            throw error("expected ',' or '}'")
        }
        depth -= 1
        return .object(members)
    }

    private mutating func parseArray() throws(JSONParseError) -> JSONValue {
        try enter()
        i += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if i < bytes.count && bytes[i] == UInt8(ascii: "]") {
            i += 1
            depth -= 1
            return .array(items)
        }
        while true {
            items.append(try parseValue())
            skipWhitespace()
            guard i < bytes.count else { throw error("unexpected end of input in an array") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "]") { i += 1; break }
            throw error("expected ',' or ']'")
        }
        depth -= 1
        return .array(items)
    }

    /// Member names of TLS reports (RFC 8460 §4.4) too long for Swift's inline small strings:
    /// a key equal to one of them shares its text instead of allocating a copy.
    private static let longKeys: [(bytes: [UInt8], text: String)] = [
        "organization-name", "total-successful-session-count", "total-failure-session-count", "receiving-mx-hostname",
        "receiving-mx-helo", "failed-session-count", "additional-information", "failure-reason-code", "additional-info-uri",
    ].map { (Array($0.utf8), $0) }

    private static func knownKey(_ slice: UnsafeBufferPointer<UInt8>) -> String? {
        guard slice.count > 15 else { return nil }
        for key in longKeys where key.bytes.count == slice.count {
            if key.bytes.withUnsafeBufferPointer({ memcmp($0.baseAddress!, slice.baseAddress!, slice.count) == 0 }) { return key.text }
        }
        return nil
    }

    private mutating func parseString(key: Bool = false) throws(JSONParseError) -> String {
        i += 1
        let start = i
        // Fast path: no escapes; ASCII needs no validation.
        var ascii = true
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<i])
                i += 1
                if ascii {
                    if key, let known = JSONParser.knownKey(slice) { return known }
                    return String(decoding: slice, as: UTF8.self)
                }
                guard let s = String(validating: slice, as: UTF8.self) else {
                    i = start
                    throw error("a string is not valid UTF-8")
                }
                return s
            }
            if b == UInt8(ascii: "\\") { break }
            if b < 0x20 { throw error("a control character inside a string") }
            if b >= 0x80 { ascii = false }
            i += 1
        }
        var out = Array(UnsafeBufferPointer(rebasing: bytes[start..<i]))
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                i += 1
                guard let s = String(validating: out, as: UTF8.self) else { throw error("a string is not valid UTF-8") }
                return s
            }
            if b < 0x20 { throw error("a control character inside a string") }
            if b != UInt8(ascii: "\\") {
                out.append(b)
                i += 1
                continue
            }
            guard i + 1 < bytes.count else { break }
            let e = bytes[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    if i + 1 < bytes.count && bytes[i] == UInt8(ascii: "\\") && bytes[i + 1] == UInt8(ascii: "u") {
                        i += 2
                        let low = try hex4()
                        if low >= 0xDC00 && low < 0xE000 {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            deviations.append("an unpaired UTF-16 surrogate in a string")
                            scalar = 0xFFFD
                        }
                    } else {
                        deviations.append("an unpaired UTF-16 surrogate in a string")
                        scalar = 0xFFFD
                    }
                } else if scalar >= 0xDC00 && scalar < 0xE000 {
                    deviations.append("an unpaired UTF-16 surrogate in a string")
                    scalar = 0xFFFD
                }
                out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
            default:
                throw error("invalid escape")
            }
        }
        throw error("unterminated string")
    }

    private mutating func hex4() throws(JSONParseError) -> UInt32 {
        guard i + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard let h = ReportURI.hexValue(bytes[i]) else { throw error("invalid \\u escape") }
            v = v << 4 | UInt32(h)
            i += 1
        }
        return v
    }

    private mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = i
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        let intStart = i
        while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1 }
        let intDigits = i - intStart
        guard intDigits > 0 else { throw error("invalid number") }
        if intDigits > 1 && bytes[intStart] == 0x30 { throw error("a number with a leading zero") }
        var integral = true
        if i < bytes.count && bytes[i] == UInt8(ascii: ".") {
            integral = false
            i += 1
            let f = i
            while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1 }
            guard i > f else { throw error("invalid number") }
        }
        if i < bytes.count && (bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E")) {
            integral = false
            i += 1
            if i < bytes.count && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) { i += 1 }
            let e = i
            while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1 }
            guard i > e else { throw error("invalid number") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        if integral && intDigits <= 18, let v = Int64(text) {
            if v > 9_007_199_254_740_991 || v < -9_007_199_254_740_991 {
                deviations.append("the integer \(text) is outside ±2^53")
            }
            return .int(v)
        }
        guard let d = Double(text) else { throw error("invalid number") }
        if integral { deviations.append("the integer \(text) is outside ±2^53") }
        return .double(d)
    }
}

// MARK: - Writing

extension JSONValue {
    /// Serialises the value. `pretty` indents with two spaces; members keep their order.
    public func serialized(pretty: Bool = false) -> String {
        String(decoding: serializedBytes(pretty: pretty), as: UTF8.self)
    }

    /// Serialises the value as UTF-8 bytes (linear time: written into one growing buffer).
    public func serializedBytes(pretty: Bool = false, indent: Int = 0) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        write(into: &out, pretty: pretty, indent: indent)
        return out
    }

    static func writeInt(_ v: Int64, into out: inout [UInt8]) {
        if v < 0 { out.append(0x2D) }
        var m = v.magnitude
        if m == 0 { out.append(0x30); return }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            while m > 0 {
                d[n] = UInt8(m % 10) + 0x30
                m /= 10
                n += 1
            }
            for k in stride(from: n - 1, through: 0, by: -1) { out.append(d[k]) }
        }
    }

    static func newline(_ out: inout [UInt8], _ indent: Int) {
        out.append(0x0A)
        out.append(contentsOf: repeatElement(0x20, count: 2 * indent))
    }

    func write(into out: inout [UInt8], pretty: Bool, indent: Int) {
        switch self {
        case .null: out.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C])
        case .bool(let b): out.append(contentsOf: b ? [0x74, 0x72, 0x75, 0x65] : [0x66, 0x61, 0x6C, 0x73, 0x65])
        case .int(let v): JSONValue.writeInt(v, into: &out)
        case .double(let d):
            let text = d.isFinite ? (d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)) : "null"
            out += Array(text.utf8)
        case .string(let s): JSONValue.writeString(s, into: &out)
        case .array(let items):
            if items.isEmpty { out += [0x5B, 0x5D]; return }
            out.append(0x5B)
            for (k, item) in items.enumerated() {
                if k > 0 { out.append(0x2C) }
                if pretty { JSONValue.newline(&out, indent + 1) }
                item.write(into: &out, pretty: pretty, indent: indent + 1)
            }
            if pretty { JSONValue.newline(&out, indent) }
            out.append(0x5D)
        case .object(let members):
            if members.isEmpty { out += [0x7B, 0x7D]; return }
            out.append(0x7B)
            for (k, member) in members.enumerated() {
                if k > 0 { out.append(0x2C) }
                if pretty { JSONValue.newline(&out, indent + 1) }
                JSONValue.writeString(member.key, into: &out)
                out.append(0x3A)
                if pretty { out.append(0x20) }
                member.value.write(into: &out, pretty: pretty, indent: indent + 1)
            }
            if pretty { JSONValue.newline(&out, indent) }
            out.append(0x7D)
        }
    }

    static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(0x22)
        // Fast path: nothing to escape, copy the bytes at once.
        var plain = s
        let copied: Bool = plain.withUTF8 { buf in
            guard !buf.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C || $0 == 0x7F || $0 == 0xE2 }) else { return false }
            out.append(contentsOf: buf)
            return true
        }
        if copied {
            out.append(0x22)
            return
        }
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        var utf8 = s.utf8.makeIterator()
        var pending: [UInt8] = []
        while let b = utf8.next() {
            switch b {
            case 0x22: out += [0x5C, 0x22]
            case 0x5C: out += [0x5C, 0x5C]
            case 0x0A: out += [0x5C, 0x6E]
            case 0x0D: out += [0x5C, 0x72]
            case 0x09: out += [0x5C, 0x74]
            case 0x00..<0x20, 0x7F:
                out += [0x5C, 0x75, 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 0xF)]]
            case 0xE2:
                // U+2028 and U+2029 (E2 80 A8/A9) are escaped for JavaScript consumers.
                pending = [b]
                if let b1 = utf8.next() {
                    pending.append(b1)
                    if let b2 = utf8.next() {
                        pending.append(b2)
                        if b1 == 0x80 && (b2 == 0xA8 || b2 == 0xA9) {
                            out += [0x5C, 0x75, 0x32, 0x30, 0x32, b2 == 0xA8 ? 0x38 : 0x39]
                            continue
                        }
                    }
                }
                out += pending
            default: out.append(b)
            }
        }
        out.append(0x22)
    }
}

/// JSON written as it is produced, without a tree: the same bytes `JSONValue.serializedBytes`
/// writes for the same values (pretty: a member or item a line, two spaces a level, `": "`;
/// empty containers as `{}` and `[]`). Containers are opened and closed in order; a member's key
/// comes before its value.
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []
    let pretty: Bool
    var depth: Int
    /// No member or item written yet in the innermost open container.
    var empty = true
    /// A key was written: its value follows on the same line.
    var afterKey = false

    public init(pretty: Bool, indent: Int = 0, capacity: Int = 1024) {
        self.pretty = pretty
        depth = indent
        bytes.reserveCapacity(capacity)
    }

    /// Separator and line before a value or member (none directly after a key, or for the value
    /// at the top).
    private mutating func next() {
        if afterKey {
            afterKey = false
            return
        }
        guard !bytes.isEmpty else { return }
        if !empty { bytes.append(0x2C) }
        if pretty { JSONValue.newline(&bytes, depth) }
        empty = false
    }

    public mutating func beginObject() { open(0x7B) }
    public mutating func endObject() { close(0x7D) }
    public mutating func beginArray() { open(0x5B) }
    public mutating func endArray() { close(0x5D) }

    private mutating func open(_ bracket: UInt8) {
        next()
        bytes.append(bracket)
        depth += 1
        empty = true
    }

    private mutating func close(_ bracket: UInt8) {
        depth -= 1
        if pretty, !empty { JSONValue.newline(&bytes, depth) }
        bytes.append(bracket)
        empty = false
    }

    public mutating func key(_ name: String) {
        next()
        JSONValue.writeString(name, into: &bytes)
        bytes.append(0x3A)
        if pretty { bytes.append(0x20) }
        afterKey = true
    }

    public mutating func string(_ value: String) {
        next()
        JSONValue.writeString(value, into: &bytes)
    }

    public mutating func int(_ value: Int64) {
        next()
        JSONValue.writeInt(value, into: &bytes)
    }

    public mutating func bool(_ value: Bool) {
        next()
        if value { bytes.append(contentsOf: [0x74, 0x72, 0x75, 0x65]) } else { bytes.append(contentsOf: [0x66, 0x61, 0x6C, 0x73, 0x65]) }
    }

    /// A tree written in place (small parts: diagnostics).
    public mutating func value(_ value: JSONValue) {
        next()
        value.write(into: &bytes, pretty: pretty, indent: depth)
    }

    /// `key: value` for an optional string: nothing when nil.
    public mutating func member(_ name: String, _ value: String?) {
        guard let value else { return }
        key(name)
        string(value)
    }
}
