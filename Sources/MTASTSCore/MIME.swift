#if canImport(Glibc)
import Glibc
#endif
/// A small, strict-enough RFC 5322 / MIME (RFC 2045–2047, 2231) reader for report mail: folded
/// headers, nested multiparts, base64 and quoted-printable bodies. It never throws on odd input:
/// what cannot be understood is an empty or raw part; depth and part counts are bounded.
public struct MIMEPart: Sendable {
    public var headers: [Header]
    public var contentType: MediaType
    /// The body as transmitted (before Content-Transfer-Encoding decoding).
    public var rawBody: ArraySlice<UInt8>
    /// Sub-parts of a multipart (or the message of a message/rfc822 part).
    public var parts: [MIMEPart]

    public struct Header: Sendable, Equatable {
        public var name: String
        /// Unfolded value, surrounding white space trimmed.
        public var value: String
        /// `name` in lowercase, for look-ups.
        var key: String
    }

    public static let maxDepth = 12
    public static let maxParts = 1000
    /// A header block larger than this, or with more fields, is not read as headers (the part is
    /// then empty: never a report), so one part cannot make us hold megabytes of header text.
    public static let maxHeaderBytes = 256 * 1024
    public static let maxHeaders = 1000

    /// The first header of that name (case-insensitive).
    public func header(_ name: String) -> String? {
        header(key: MIMEPart.asciiLowercased(name.utf8))
    }

    /// The first header whose lowercase name is `key`.
    func header(key: String) -> String? {
        headers.first { $0.key == key }?.value
    }

    public var transferEncoding: String {
        header(key: "content-transfer-encoding").map { MIMEPart.asciiLowercased($0.trimmingWSP().utf8) } ?? "7bit"
    }

    /// `filename` of Content-Disposition, else `name` of Content-Type.
    public var filename: String? {
        if let cd = header(key: "content-disposition"), let name = MediaType.parameters(of: cd)["filename"] { return name }
        return contentType.parameters["name"]
    }

    /// ASCII letters lowered, other bytes as they are (header names and MIME tokens are ASCII;
    /// Unicode lowering would also map e.g. the Kelvin sign to 'k').
    static func asciiLowercased<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        String(unsafeUninitializedCapacity: bytes.count) { buffer in
            var n = 0
            for b in bytes {
                buffer[n] = b >= 0x41 && b <= 0x5A ? b | 0x20 : b
                n += 1
            }
            return n
        }
    }

    /// The body after Content-Transfer-Encoding decoding.
    public var decodedBody: [UInt8] {
        switch transferEncoding {
        case "base64": return Base64.decode(rawBody)
        case "quoted-printable": return QuotedPrintable.decode(rawBody)
        default: return Array(rawBody)
        }
    }

    /// Every leaf part, depth first.
    public var leaves: [MIMEPart] {
        parts.isEmpty ? [self] : parts.flatMap(\.leaves)
    }

    /// Parses a whole message (or a part: headers, empty line, body).
    public static func parse(_ bytes: [UInt8]) -> MIMEPart {
        var budget = maxParts
        return parse(bytes[...], depth: 0, budget: &budget)
    }

    static func parse(_ bytes: ArraySlice<UInt8>, depth: Int, budget: inout Int, defaultType: MediaType = .textPlain) -> MIMEPart {
        let (headers, bodyStart) = parseHeaders(bytes)
        let body = bytes[bodyStart...]
        let contentType = headers.first { $0.key == "content-type" }.flatMap { MediaType(parsing: $0.value) } ?? defaultType
        var part = MIMEPart(headers: headers, contentType: contentType, rawBody: body, parts: [])
        budget -= 1
        guard depth < maxDepth, budget > 0 else { return part }
        if contentType.type == "multipart", let boundary = contentType.parameters["boundary"], !boundary.isEmpty {
            let childDefault: MediaType = contentType.subtype == "digest" ? .messageRFC822 : .textPlain
            for slice in splitMultipart(body, boundary: Array(boundary.utf8)) {
                guard budget > 0 else { break }
                part.parts.append(parse(slice, depth: depth + 1, budget: &budget, defaultType: childDefault))
            }
        } else if contentType.type == "message" && contentType.subtype == "rfc822" {
            let inner = part.decodedBody
            part.parts = [parse(inner[...], depth: depth + 1, budget: &budget)]
        }
        return part
    }

    /// Reads the header block; returns the headers and where the body begins.
    static func parseHeaders(_ bytes: ArraySlice<UInt8>) -> ([Header], Int) {
        let base = bytes.startIndex
        let (headers, end) = bytes.withUnsafeBufferPointer { parseHeaders($0) }
        return (headers, end.map { base + $0 } ?? bytes.endIndex)
    }

    /// The same on a buffer; the body's offset, or nil for "no body" (the end of the bytes).
    private static func parseHeaders(_ bytes: UnsafeBufferPointer<UInt8>) -> ([Header], Int?) {
        var headers: [Header] = []
        let n = bytes.count
        guard let p = bytes.baseAddress, n > 0 else { return ([], nil) }
        func isWSP(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }
        func find(_ byte: UInt8, _ from: Int, _ to: Int) -> Int? {
            guard from < to, let hit = memchr(p + from, Int32(byte), to - from) else { return nil }
            return UnsafeRawPointer(hit) - UnsafeRawPointer(p)
        }
        // The field being read: one line in place, or the lines of a folded field joined.
        var fieldStart = 0, fieldEnd = 0
        var folded: [UInt8] = []
        func add(_ field: UnsafeBufferPointer<UInt8>) {
            guard let colon = field.firstIndex(of: 0x3A) else { return }
            var nameEnd = colon
            while nameEnd > 0, isWSP(field[nameEnd - 1]) { nameEnd -= 1 }
            var valueStart = colon + 1, valueEnd = field.count
            while valueStart < valueEnd, isWSP(field[valueStart]) { valueStart += 1 }
            while valueEnd > valueStart, isWSP(field[valueEnd - 1]) { valueEnd -= 1 }
            let name = UnsafeBufferPointer(rebasing: field[0..<nameEnd])
            guard !name.isEmpty, !name.contains(where: isWSP) else { return }
            headers.append(Header(name: String(decoding: name, as: UTF8.self),
                                  value: String(decoding: UnsafeBufferPointer(rebasing: field[valueStart..<valueEnd]), as: UTF8.self),
                                  key: asciiLowercased(name)))
        }
        func flush() {
            if !folded.isEmpty {
                folded.withUnsafeBufferPointer { add($0) }
                folded.removeAll(keepingCapacity: true)
            } else if fieldEnd > fieldStart {
                add(UnsafeBufferPointer(rebasing: bytes[fieldStart..<fieldEnd]))
            }
            fieldStart = 0
            fieldEnd = 0
        }
        var i = 0
        while i < n {
            guard i <= maxHeaderBytes, headers.count < maxHeaders else { return ([], nil) }
            let lineEnd = find(0x0A, i, n) ?? n
            var end = lineEnd
            if end > i && p[end - 1] == 0x0D { end -= 1 }
            let next = lineEnd < n ? lineEnd + 1 : lineEnd
            if end == i {
                flush()
                return (headers, next)
            }
            if isWSP(p[i]) {
                if fieldEnd == fieldStart && folded.isEmpty && headers.isEmpty && i == 0 {
                    // A body that begins with white space: no header block at all.
                    return ([], 0)
                }
                if folded.isEmpty { folded.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[fieldStart..<fieldEnd])) }
                var k = i
                while k < end, isWSP(p[k]) { k += 1 }
                folded.append(0x20)
                folded.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[k..<end]))
            } else {
                if find(0x3A, i, end) == nil {
                    // Not a header line: the header block ended without an empty line.
                    flush()
                    return (headers, i)
                }
                flush()
                fieldStart = i
                fieldEnd = end
            }
            i = next
        }
        flush()
        guard n <= maxHeaderBytes, headers.count <= maxHeaders else { return ([], nil) }
        return (headers, nil)
    }

    /// Splits a multipart body at its delimiter lines (RFC 2046 §5.1.1). The line break before a
    /// delimiter belongs to the delimiter; the preamble and epilogue are dropped.
    static func splitMultipart(_ body: ArraySlice<UInt8>, boundary: [UInt8]) -> [ArraySlice<UInt8>] {
        let delimiter: [UInt8] = [0x2D, 0x2D] + boundary
        var parts: [ArraySlice<UInt8>] = []
        var partStart: Int?
        var i = body.startIndex
        while i < body.endIndex {
            let lineEnd = body[i...].firstIndex(of: 0x0A) ?? body.endIndex
            let line = body[i..<lineEnd]
            let next = lineEnd < body.endIndex ? lineEnd + 1 : lineEnd
            if line.starts(with: delimiter) {
                let rest = line.dropFirst(delimiter.count)
                let isClose = rest.starts(with: [0x2D, 0x2D])
                let tail = isClose ? rest.dropFirst(2) : rest
                if tail.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) {
                    if let start = partStart {
                        var end = i
                        if end > start && body[end - 1] == 0x0A { end -= 1 }
                        if end > start && body[end - 1] == 0x0D { end -= 1 }
                        parts.append(body[start..<max(start, end)])
                    }
                    if isClose { return parts }
                    partStart = next
                }
            }
            i = next
        }
        // No closing delimiter (a truncated message): keep what there is.
        if let start = partStart, start < body.endIndex { parts.append(body[start...]) }
        return parts
    }
}

/// A media type with lowercase type, subtype and parameter names.
public struct MediaType: Sendable, Equatable, CustomStringConvertible {
    public var type: String
    public var subtype: String
    public var parameters: [String: String]

    public static let textPlain = MediaType(type: "text", subtype: "plain", parameters: [:])
    public static let messageRFC822 = MediaType(type: "message", subtype: "rfc822", parameters: [:])

    public var essence: String { "\(type)/\(subtype)" }
    public var description: String { essence }

    public init(type: String, subtype: String, parameters: [String: String]) {
        self.type = type
        self.subtype = subtype
        self.parameters = parameters
    }

    public init?(parsing value: String) {
        // On the UTF-8 bytes: every delimiter is ASCII.
        let bytes = Array(value.utf8)
        let semicolon = bytes.firstIndex(of: 0x3B) ?? bytes.endIndex
        guard let slash = bytes[..<semicolon].firstIndex(of: 0x2F) else { return nil }
        let type = MediaType.trimmedWSP(bytes[..<slash])
        let subtype = MediaType.trimmedWSP(bytes[(slash + 1)..<semicolon])
        guard !type.isEmpty, !subtype.isEmpty else { return nil }
        self.type = MIMEPart.asciiLowercased(type)
        self.subtype = MIMEPart.asciiLowercased(subtype)
        parameters = MediaType.parameters(bytes)
    }

    static func trimmedWSP(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var slice = bytes
        while let f = slice.first, f == 0x20 || f == 0x09 { slice = slice.dropFirst() }
        while let l = slice.last, l == 0x20 || l == 0x09 { slice = slice.dropLast() }
        return slice
    }

    /// Parameters of a structured header value (`a/b; k=v; k2="quoted; v"`), RFC 2231 continuations
    /// and charset'language'percent-encoded values included.
    public static func parameters(of value: String) -> [String: String] {
        parameters(Array(value.utf8))
    }

    /// The same on the value's UTF-8 bytes (every delimiter is ASCII, so a value's other bytes,
    /// multi-byte characters included, are copied as they are).
    static func parameters(_ bytes: [UInt8]) -> [String: String] {
        var result: [String: String] = [:]
        var continued: [String: [Int: String]] = [:]
        let quote = UInt8(ascii: "\""), semicolon = UInt8(ascii: ";"), equals = UInt8(ascii: "="), backslash = UInt8(ascii: "\\")
        let n = bytes.count
        var i = 0
        // Skip the leading token (media type or disposition).
        while i < n && bytes[i] != semicolon {
            if bytes[i] == quote { i += 1; while i < n && bytes[i] != quote { i += 1 } }
            i += 1
        }
        while i < n {
            i += 1  // past ';'
            while i < n && (bytes[i] == 0x20 || bytes[i] == 0x09) { i += 1 }
            let nameStart = i
            while i < n && bytes[i] != equals && bytes[i] != semicolon { i += 1 }
            var name = MIMEPart.asciiLowercased(trimmedWSP(bytes[nameStart..<i]))
            guard i < n, bytes[i] == equals else { continue }
            i += 1
            while i < n && (bytes[i] == 0x20 || bytes[i] == 0x09) { i += 1 }
            var v: String
            if i < n && bytes[i] == quote {
                i += 1
                var unquoted: [UInt8] = []
                while i < n && bytes[i] != quote {
                    if bytes[i] == backslash && i + 1 < n { i += 1 }
                    unquoted.append(bytes[i])
                    i += 1
                }
                v = String(decoding: unquoted, as: UTF8.self)
                while i < n && bytes[i] != semicolon { i += 1 }
            } else {
                let valueStart = i
                while i < n && bytes[i] != semicolon { i += 1 }
                v = String(decoding: trimmedWSP(bytes[valueStart..<i]), as: UTF8.self)
            }
            guard !name.isEmpty else { continue }
            // RFC 2231: name*=charset'lang'value, name*0=, name*1*=
            var extended = false
            if name.utf8.last == UInt8(ascii: "*") {
                extended = true
                name.removeLast()
            }
            var section: Int?
            if let star = name.lastIndex(of: "*"), let n = Int(name[name.index(after: star)...]) {
                section = n
                name = String(name[..<star])
            }
            if extended {
                if section == nil || section == 0, let q1 = v.firstIndex(of: "'"), let q2 = v[v.index(after: q1)...].firstIndex(of: "'") {
                    v = String(v[v.index(after: q2)...])
                }
                v = ReportURI.percentDecode(Array(v.utf8)[...]) ?? v
            }
            if let section {
                continued[name, default: [:]][section] = v
            } else if result[name] == nil {
                result[name] = v
            }
        }
        for (name, sections) in continued where result[name] == nil {
            result[name] = sections.keys.sorted().map { sections[$0]! }.joined()
        }
        return result
    }
}

public enum Base64 {
    private static let table: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() { t[Int(c)] = UInt8(i) }
        t[Int(UInt8(ascii: "-"))] = 62
        t[Int(UInt8(ascii: "_"))] = 63
        return t
    }()

    /// Decodes base64, skipping line breaks and anything outside the alphabet; stops at '='.
    public static func decode<C: Collection>(_ input: C) -> [UInt8] where C.Element == UInt8 {
        if let decoded = input.withContiguousStorageIfAvailable({ decode(buffer: $0) }) { return decoded }
        return Array(input).withUnsafeBufferPointer { decode(buffer: $0) }
    }

    private static func decode(buffer input: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        table.withUnsafeBufferPointer { table in
            [UInt8](unsafeUninitializedCapacity: input.count * 3 / 4 + 3) { out, count in
                var n = 0
                var acc: UInt32 = 0
                var bits = 0
                for c in input {
                    if c == UInt8(ascii: "=") { break }
                    let v = table[Int(c)]
                    if v == 0xFF { continue }
                    acc = acc << 6 | UInt32(v)
                    bits += 6
                    if bits >= 8 {
                        bits -= 8
                        out[n] = UInt8(truncatingIfNeeded: acc >> UInt32(bits))
                        n += 1
                    }
                }
                count = n
            }
        }
    }

    /// Encodes, wrapping lines at `lineLength` characters with CRLF (0: no wrapping).
    public static func encode(_ input: [UInt8], lineLength: Int = 76) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(input.count * 4 / 3 + input.count / 38 + 4)
        var col = 0
        func emit(_ c: UInt8) {
            if lineLength > 0 && col == lineLength {
                out.append(0x0D)
                out.append(0x0A)
                col = 0
            }
            out.append(c)
            col += 1
        }
        var i = 0
        while i + 3 <= input.count {
            let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
            emit(alphabet[Int(n >> 18 & 63)]); emit(alphabet[Int(n >> 12 & 63)])
            emit(alphabet[Int(n >> 6 & 63)]); emit(alphabet[Int(n & 63)])
            i += 3
        }
        let rest = input.count - i
        if rest > 0 {
            let n = UInt32(input[i]) << 16 | (rest == 2 ? UInt32(input[i + 1]) << 8 : 0)
            emit(alphabet[Int(n >> 18 & 63)]); emit(alphabet[Int(n >> 12 & 63)])
            emit(rest == 2 ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "=")); emit(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }
}

public enum QuotedPrintable {
    public static func decode<C: Collection>(_ input: C) -> [UInt8] where C.Element == UInt8, C.Index == Int {
        var out: [UInt8] = []
        out.reserveCapacity(input.count)
        var i = input.startIndex
        while i < input.endIndex {
            let c = input[i]
            if c == UInt8(ascii: "=") {
                // Soft line break: '=' then optional white space then (CR)LF.
                var j = i + 1
                while j < input.endIndex && (input[j] == 0x20 || input[j] == 0x09) { j += 1 }
                if j < input.endIndex && input[j] == 0x0D { j += 1 }
                if j < input.endIndex && input[j] == 0x0A { i = j + 1; continue }
                if j == input.endIndex { break }
                if i + 2 < input.endIndex, let h = ReportURI.hexValue(input[i + 1]), let l = ReportURI.hexValue(input[i + 2]) {
                    out.append(h << 4 | l)
                    i += 3
                    continue
                }
            }
            out.append(c)
            i += 1
        }
        return out
    }
}
