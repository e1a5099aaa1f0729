// The IMAP server's side of the wire (RFC 9051 §7, RFC 3501 §7): responses as values, a parser
// of one response from a byte buffer, and a stream that cuts the bytes of a connection into
// responses. Pure Swift (no imports), so a libFuzzer target compiles this file alone
// (`Fuzz/FuzzIMAP.swift`).
//
// The server is not trusted: every byte is checked, every length bounded (a line, the literals of
// one response, the nesting of lists, the count of literals), numbers are read without overflow,
// lists are read without recursion, and anything malformed is an `IMAPProtocolError`, never a trap.

/// One response from an IMAP server, as far as this client reads them.
public enum IMAPResponse: Equatable, Sendable {
    /// The completion of a command: `A0001 OK [code] text`.
    case tagged(tag: String, IMAPStatusResponse)
    /// Data or status not tied to a command: `* 3 EXISTS`, `* OK [UIDVALIDITY 7] …`.
    case untagged(IMAPUntagged)
    /// `+ text`: the server waits for the rest of a command (IDLE, AUTHENTICATE, a literal).
    case continuation(String)
}

/// A status: the kind, an optional response code in brackets, and human-readable text.
public struct IMAPStatusResponse: Equatable, Sendable {
    public enum Status: String, Equatable, Sendable {
        case ok = "OK", no = "NO", bad = "BAD", bye = "BYE", preauth = "PREAUTH"
    }

    public var status: Status
    public var code: IMAPResponseCode?
    /// The text after the code (UTF-8, no CR, LF or NUL; it may hold other control characters,
    /// so render it with care).
    public var text: String

    public init(status: Status, code: IMAPResponseCode? = nil, text: String) {
        self.status = status
        self.code = code
        self.text = text
    }
}

/// The response codes (RFC 9051 §7.1) this client acts on; the others keep their name and
/// arguments.
public enum IMAPResponseCode: Equatable, Sendable {
    case alert
    case authenticationFailed
    case authorizationFailed
    case alreadyExists
    case nonExistent
    case tryCreate
    case readOnly
    case readWrite
    case uidValidity(UInt32)
    case uidNext(UInt32)
    /// The capabilities, as the server spelled them.
    case capability([String])
    case permanentFlags([String])
    /// Any other code: its name (upper-cased) and the raw text of its arguments.
    case other(name: String, arguments: String?)
}

/// Untagged responses (`* …`).
public enum IMAPUntagged: Equatable, Sendable {
    /// `* OK/NO/BAD/BYE/PREAUTH [code] text`.
    case status(IMAPStatusResponse)
    case capability([String])
    case exists(UInt32)
    case expunge(UInt32)
    case recent(UInt32)
    case flags([String])
    /// `* SEARCH n n n` (a trailing `(MODSEQ n)` is read and left out).
    case search([UInt32])
    case fetch(sequence: UInt32, IMAPFetch)
    /// Any other response (LIST, STATUS, ENABLED, ESEARCH, …): read to its end and kept by name
    /// (upper-cased) only.
    case other(String)
}

/// The attributes of a `* n FETCH (…)` this client uses; the others are read and left out.
public struct IMAPFetch: Equatable, Sendable {
    public var uid: UInt32?
    public var flags: [String]?
    /// `BODY[]` (or `RFC822`, `BINARY[]`): the whole message. Nil when absent or NIL.
    public var body: [UInt8]?
    public var size: UInt32?

    public init(uid: UInt32? = nil, flags: [String]? = nil, body: [UInt8]? = nil, size: UInt32? = nil) {
        self.uid = uid
        self.flags = flags
        self.body = body
        self.size = size
    }
}

/// Malformed or oversized input from the server. Equal by code.
public struct IMAPProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// Not IMAP syntax where a response was expected.
        public static let malformed = Code(name: "malformed")
        /// More than the line limit of bytes outside literals in one response.
        public static let lineTooLong = Code(name: "lineTooLong")
        /// A number out of range (a UID above 4294967295, a literal size beyond 2^63).
        public static let numberOutOfRange = Code(name: "numberOutOfRange")
        /// Lists nested deeper than the limit.
        public static let nestingTooDeep = Code(name: "nestingTooDeep")
        /// Text or a string that is not UTF-8.
        public static let notUTF8 = Code(name: "notUTF8")
        /// More literals in one response than the limit.
        public static let tooManyLiterals = Code(name: "tooManyLiterals")
    }

    public var code: Code
    public var reason: String
    /// Where in the response (bytes from its first) the problem was found.
    public var offset: Int

    public init(_ code: Code, _ reason: String, offset: Int) {
        self.code = code
        self.reason = reason
        self.offset = offset
    }

    public var description: String { "malformed IMAP response (byte \(offset)): \(reason)" }

    public static func == (a: IMAPProtocolError, b: IMAPProtocolError) -> Bool { a.code == b.code }
}

/// The bounds on one response. The defaults suit a mailbox of reports: lines of 64 KiB, 64 MiB
/// of literals (the caller sets this to its message size limit), 64 literals, lists 32 deep.
public struct IMAPParserLimits: Equatable, Sendable {
    /// Bytes outside literal data in one response.
    public var maxLine: Int
    /// Literal bytes in one response, all literals together. A literal beyond it is reported
    /// (`oversizedLiteral`), so the stream can skip it.
    public var maxLiteral: Int
    /// Literals in one response.
    public var maxLiterals: Int
    /// Nesting of parenthesised lists.
    public var maxDepth: Int

    public init(maxLine: Int = 65_536, maxLiteral: Int = 64 << 20, maxLiterals: Int = 64, maxDepth: Int = 32) {
        self.maxLine = max(maxLine, 64)
        self.maxLiteral = max(maxLiteral, 0)
        self.maxLiterals = max(maxLiterals, 1)
        self.maxDepth = max(maxDepth, 1)
    }
}

/// Reads one response from the front of a buffer. Stateless: give it the bytes from the start of
/// the response each time (it runs in time linear in the bytes outside literals; literal data is
/// skipped over by its count, not scanned).
public enum IMAPResponseParser {
    /// What a retry needs before it can get further.
    public enum Need: Equatable, Sendable {
        /// A line feed after the bytes given (the response stops in a line).
        case lineEnd
        /// At least this many bytes from the start of the response (it stops in a literal).
        case bytes(Int)
    }

    public enum Step: Equatable, Sendable {
        /// The bytes end before the response does.
        case needMore(Need)
        /// A whole response, `consumed` bytes long (always > 0).
        case response(IMAPResponse, consumed: Int)
        /// A literal of `size` bytes would pass `maxLiteral`: its header ends at `dataStart`, and
        /// its size is written at `digits` (offsets from the start of the response). A stream that
        /// wants to go on drops the data and reads the size as 0 (see `IMAPResponseStream`).
        case oversizedLiteral(size: Int, digits: Range<Int>, dataStart: Int)
    }

    /// Reads the response that starts at `start` in `bytes`; offsets in the result count from
    /// `start`.
    public static func next(_ bytes: [UInt8], from start: Int = 0, limits: IMAPParserLimits = IMAPParserLimits()) throws -> Step {
        guard start >= 0, start <= bytes.count else { return .needMore(.lineEnd) }
        return try bytes.withUnsafeBufferPointer { all in
            try next(UnsafeBufferPointer(rebasing: all[start...]), limits: limits)
        }
    }

    /// Reads the response at the start of `buffer`.
    public static func next(_ buffer: UnsafeBufferPointer<UInt8>, limits: IMAPParserLimits = IMAPParserLimits()) throws -> Step {
        var reader = Reader(b: buffer, limits: limits)
        do {
            let response = try reader.response()
            return .response(response, consumed: reader.p)
        } catch let stop as Stop {
            switch stop {
            case .more(let need): return .needMore(need)
            case .oversized(let size, let digits, let dataStart): return .oversizedLiteral(size: size, digits: digits, dataStart: dataStart)
            }
        }
    }
}

/// Cuts the bytes of a connection into responses: bytes go in as they arrive, whole responses
/// come out. A response is parsed again only when it can have grown (a line feed came, a literal
/// is complete), and a literal beyond the limit is dropped as it streams in (its size is kept
/// in the frame), so an oversized message leaves the connection usable.
public struct IMAPResponseStream: Sendable {
    /// One response and what was dropped from it.
    public struct Frame: Equatable, Sendable {
        public var response: IMAPResponse
        /// The sizes of literals dropped because they passed `maxLiteral` (read as empty).
        public var droppedLiterals: [Int]
    }

    public let limits: IMAPParserLimits
    private var buffer: [UInt8] = []
    private var head = 0
    private var need: IMAPResponseParser.Need = .lineEnd
    /// Where to look for the awaited line feed (an absolute index into `buffer`).
    private var scanFrom = 0
    /// Where the wait for a line feed began: past `maxLine` more bytes the parser must judge.
    private var lineWaitStart = 0
    /// Literal bytes still to drop as they arrive.
    private var skipping = 0
    private var dropped: [Int] = []

    public init(limits: IMAPParserLimits = IMAPParserLimits()) {
        self.limits = limits
    }

    /// Is anything held that is not yet a whole response (bytes, or a literal being dropped)?
    public var holdsPartialResponse: Bool { buffer.count > head || skipping > 0 || !dropped.isEmpty }

    /// Takes bytes from the connection.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        var chunk = bytes[...]
        if skipping > 0 {
            let drop = min(skipping, chunk.count)
            skipping -= drop
            chunk = chunk.dropFirst(drop)
        }
        buffer.append(contentsOf: chunk)
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// The next whole response, or nil until more bytes come.
    public mutating func next() throws -> Frame? {
        while skipping == 0, ready() {
            let step = try IMAPResponseParser.next(buffer, from: head, limits: limits)
            switch step {
            case .response(let response, let consumed):
                head += consumed
                let frame = Frame(response: response, droppedLiterals: dropped)
                dropped = []
                need = .lineEnd
                scanFrom = head
                lineWaitStart = head
                compact()
                return frame
            case .needMore(let awaited):
                need = awaited
                if case .lineEnd = awaited {
                    scanFrom = buffer.count
                    lineWaitStart = buffer.count
                }
            case .oversizedLiteral(let size, let digits, let dataStart):
                // Read the size as 0 from now on (same length, so offsets hold) and drop the data.
                for i in digits { buffer[head + i] = UInt8(ascii: "0") }
                let start = head + dataStart
                let present = min(size, buffer.count - start)
                buffer.removeSubrange(start..<(start + present))
                skipping = size - present
                dropped.append(size)
                need = .bytes(dataStart)
            }
        }
        return nil
    }

    /// Can a parse get further than the last one?
    private mutating func ready() -> Bool {
        switch need {
        case .bytes(let count):
            return buffer.count - head >= count
        case .lineEnd:
            if buffer.count - max(lineWaitStart, head) > limits.maxLine { return true }  // the parser says it is too long
            var i = max(scanFrom, head)
            while i < buffer.count {
                if buffer[i] == 0x0A { return true }
                i += 1
            }
            scanFrom = buffer.count
            return false
        }
    }

    private mutating func compact() {
        if head == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
            head = 0
            scanFrom = 0
            lineWaitStart = 0
        } else if head > 65_536 && head > buffer.count / 2 {
            buffer.removeSubrange(0..<head)
            scanFrom -= head
            lineWaitStart = max(lineWaitStart - head, 0)
            head = 0
        }
    }
}

// MARK: - The reader

/// Why the reader stopped short of a response (not an error).
private enum Stop: Error {
    case more(IMAPResponseParser.Need)
    case oversized(Int, Range<Int>, Int)
}

/// A value in a parenthesised list or an unknown response.
private indirect enum Item {
    case atom(String)
    case string([UInt8])
    case nil_
    case list([Item])
}

private let SP: UInt8 = 0x20, CR: UInt8 = 0x0D, LF: UInt8 = 0x0A, DQUOTE: UInt8 = 0x22, BACKSLASH: UInt8 = 0x5C
private let LPAREN: UInt8 = 0x28, RPAREN: UInt8 = 0x29, LBRACE: UInt8 = 0x7B, RBRACE: UInt8 = 0x7D
private let LBRACKET: UInt8 = 0x5B, RBRACKET: UInt8 = 0x5D, PLUS: UInt8 = 0x2B, STAR: UInt8 = 0x2A

/// An atom's bytes: printable ASCII but the specials `( ) { " SP` (`\`, `%`, `*`, `[`, `]` are
/// let in: flags, wildcards, sections).
@inline(__always) private func isAtomChar(_ c: UInt8) -> Bool {
    c > 0x20 && c < 0x7F && c != LPAREN && c != RPAREN && c != LBRACE && c != DQUOTE
}

/// A tag's bytes (RFC 9051 `tag`): atom characters but `+`, `*`, `%`, `\`.
@inline(__always) private func isTagChar(_ c: UInt8) -> Bool {
    isAtomChar(c) && c != PLUS && c != STAR && c != 0x25 && c != BACKSLASH
}

@inline(__always) private func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

/// ASCII upper case, for the case-insensitive keywords of IMAP.
private func upper(_ s: String) -> String {
    String(decoding: s.utf8.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }, as: UTF8.self)
}

/// A byte for an error message.
private func show(_ c: UInt8) -> String {
    switch c {
    case CR: return "CR"
    case LF: return "LF"
    case 0x21..<0x7F: return "'\(Character(Unicode.Scalar(c)))'"
    default:
        let hex = String(c, radix: 16, uppercase: true)
        return "0x" + (hex.count < 2 ? "0" + hex : hex)
    }
}

/// The bytes as a String when they are valid UTF-8.
private func utf8(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> String? {
    let s = String(decoding: bytes, as: UTF8.self)
    // Invalid sequences decode to U+FFFD (3 bytes each): equal bytes mean nothing was repaired.
    return s.utf8.elementsEqual(bytes) ? s : nil
}

private struct Reader {
    let b: UnsafeBufferPointer<UInt8>
    let limits: IMAPParserLimits
    var p = 0
    /// Literal data bytes before `p` (they do not count toward the line limit).
    var literalBytes = 0
    var literals = 0

    init(b: UnsafeBufferPointer<UInt8>, limits: IMAPParserLimits) {
        self.b = b
        self.limits = limits
    }

    func fail(_ code: IMAPProtocolError.Code, _ reason: String) -> IMAPProtocolError {
        IMAPProtocolError(code, reason, offset: p)
    }

    /// The byte at `p`; stops for more when the buffer ends, fails past the line limit.
    @inline(__always) func peek() throws -> UInt8 {
        guard p - literalBytes < limits.maxLine else {
            throw fail(.lineTooLong, "more than \(limits.maxLine) bytes outside literals")
        }
        guard p < b.count else { throw Stop.more(.lineEnd) }
        return b[p]
    }

    mutating func expect(_ c: UInt8, _ what: String) throws {
        let got = try peek()
        guard got == c else { throw fail(.malformed, "expected \(what), found \(show(got))") }
        p += 1
    }

    mutating func space() throws { try expect(SP, "a space") }

    mutating func crlf() throws {
        let c = try peek()
        guard c == CR else {
            throw fail(.malformed, c == LF ? "a line ends in LF without CR" : "expected the end of the line, found \(show(c))")
        }
        p += 1
        let d = try peek()
        guard d == LF else { throw fail(.malformed, "CR without LF") }
        p += 1
    }

    func atLineEnd() throws -> Bool { try peek() == CR }

    /// An atom: 1* atom characters (`stop` ends it early, e.g. `]` in a response code).
    mutating func atom(what: String, stop: UInt8? = nil) throws -> String {
        let start = p
        while true {
            let c = try peek()
            guard isAtomChar(c), c != stop else { break }
            p += 1
        }
        guard p > start else { throw fail(.malformed, "expected \(what), found \(show(b[p]))") }
        // Atom characters are ASCII: the bytes are a valid String.
        return String(decoding: b[start..<p], as: UTF8.self)
    }

    /// A number (RFC 9051 `number`, 32 bits): a UID, a sequence number, a count.
    mutating func number32(_ what: String) throws -> UInt32 {
        let start = p
        var value: UInt32 = 0
        while isDigit(try peek()) {
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times.addingReportingOverflow(UInt32(b[p] - 0x30))
            guard !o1, !o2 else { throw fail(.numberOutOfRange, "\(what) above 4294967295") }
            value = sum
            p += 1
        }
        guard p > start else { throw fail(.malformed, "expected \(what) (digits), found \(show(b[p]))") }
        return value
    }

    /// Human-readable text up to CR: UTF-8, no NUL or LF.
    mutating func text() throws -> String {
        let start = p
        while true {
            let c = try peek()
            if c == CR { break }
            guard c != LF, c != 0 else { throw fail(.malformed, "\(show(c)) in text") }
            p += 1
        }
        guard let s = utf8(b[start..<p]) else { throw IMAPProtocolError(.notUTF8, "text that is not UTF-8", offset: start) }
        return s
    }

    /// A quoted string: `\"` and `\\` are the only escapes; no CR, LF or NUL.
    mutating func quoted() throws -> [UInt8] {
        try expect(DQUOTE, "'\"'")
        var out: [UInt8] = []
        while true {
            var c = try peek()
            p += 1
            if c == DQUOTE { return out }
            if c == BACKSLASH {
                c = try peek()
                guard c == DQUOTE || c == BACKSLASH else { throw fail(.malformed, "\\\(show(c)) in a quoted string") }
                p += 1
            } else if c == CR || c == LF || c == 0 {
                p -= 1
                throw fail(.malformed, "\(show(c)) in a quoted string")
            }
            out.append(c)
        }
    }

    /// A literal `{n}` or `{n+}`, CRLF, then n bytes of anything.
    mutating func literal() throws -> [UInt8] {
        try expect(LBRACE, "'{'")
        let digitsStart = p
        var size: UInt64 = 0
        while isDigit(try peek()) {
            let (times, o1) = size.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times.addingReportingOverflow(UInt64(b[p] - 0x30))
            guard !o1, !o2, sum <= UInt64(Int64.max) else { throw fail(.numberOutOfRange, "a literal size beyond 2^63") }
            size = sum
            p += 1
        }
        let digits = digitsStart..<p
        guard !digits.isEmpty else { throw fail(.malformed, "a literal without a size") }
        if try peek() == PLUS { p += 1 }
        try expect(RBRACE, "'}' after a literal size")
        try crlf()
        literals += 1
        guard literals <= limits.maxLiterals else {
            throw fail(.tooManyLiterals, "more than \(limits.maxLiterals) literals in one response")
        }
        // Int64.max fits Int on the 64-bit platforms this runs on; clamp elsewhere.
        let count = size > UInt64(Int.max) ? Int.max : Int(size)
        guard count <= limits.maxLiteral - literalBytes else { throw Stop.oversized(count, digits, p) }
        guard b.count - p >= count else { throw Stop.more(.bytes(p + count)) }
        let data = Array(b[p..<(p + count)])
        p += count
        literalBytes += count
        return data
    }

    /// A string: quoted or literal.
    mutating func string() throws -> [UInt8] {
        try peek() == LBRACE ? literal() : quoted()
    }

    /// A string or NIL.
    mutating func nstring() throws -> [UInt8]? {
        switch try item() {
        case .string(let bytes): return bytes
        case .nil_: return nil
        default: throw fail(.malformed, "expected a string or NIL")
        }
    }

    /// One value: an atom, NIL, a string or a list of values, read with a stack (no recursion).
    mutating func item() throws -> Item {
        var stack: [[Item]] = []
        next: while true {
            var element: Item
            let c = try peek()
            if c == LPAREN {
                guard stack.count < limits.maxDepth else {
                    throw fail(.nestingTooDeep, "lists nested deeper than \(limits.maxDepth)")
                }
                p += 1
                stack.append([])
                guard try peek() == RPAREN else { continue next }
                p += 1
                element = .list(stack.removeLast())
            } else if c == DQUOTE || c == LBRACE {
                element = .string(try string())
            } else {
                let a = try atom(what: "a value")
                element = upper(a) == "NIL" ? .nil_ : .atom(a)
            }
            // The element is complete: add it to its list, and close the lists that end here.
            while true {
                guard !stack.isEmpty else { return element }
                stack[stack.count - 1].append(element)
                let d = try peek()
                if d == SP {
                    p += 1
                    continue next
                }
                guard d == RPAREN else { throw fail(.malformed, "expected a space or ')' in a list, found \(show(d))") }
                p += 1
                element = .list(stack.removeLast())
            }
        }
    }

    /// `(flag flag …)`.
    mutating func flagList() throws -> [String] {
        guard case .list(let items) = try item() else { throw fail(.malformed, "expected a list of flags") }
        return try items.map {
            guard case .atom(let flag) = $0 else { throw fail(.malformed, "a flag that is not an atom") }
            return flag
        }
    }

    /// Values separated by spaces up to the end of the line (an unknown response).
    mutating func skipToLineEnd() throws {
        while try !atLineEnd() {
            try space()
            _ = try item()
        }
    }

    // MARK: responses

    mutating func response() throws -> IMAPResponse {
        let first = try peek()
        let response: IMAPResponse
        if first == STAR {
            p += 1
            try space()
            response = .untagged(try untagged())
        } else if first == PLUS {
            p += 1
            var text = ""
            if try !atLineEnd() {
                try space()
                text = try self.text()
            }
            response = .continuation(text)
        } else if isTagChar(first) {
            let start = p
            while isTagChar(try peek()) { p += 1 }
            let tag = String(decoding: b[start..<p], as: UTF8.self)
            try space()
            let word = upper(try atom(what: "OK, NO or BAD", stop: RBRACKET))
            guard let status = IMAPStatusResponse.Status(rawValue: word), [.ok, .no, .bad].contains(status) else {
                throw IMAPProtocolError(.malformed, "a tagged response must be OK, NO or BAD, not \(word.prefix(20))", offset: start)
            }
            response = .tagged(tag: tag, try statusResponse(status))
        } else {
            throw fail(.malformed, "a response must begin with '*', '+' or a tag, not \(show(first))")
        }
        try crlf()
        return response
    }

    mutating func untagged() throws -> IMAPUntagged {
        if isDigit(try peek()) {
            let n = try number32("a message number")
            try space()
            let name = upper(try atom(what: "a response name"))
            switch name {
            case "EXISTS": return .exists(n)
            case "EXPUNGE": return .expunge(n)
            case "RECENT": return .recent(n)
            case "FETCH":
                try space()
                return .fetch(sequence: n, try fetchAttributes())
            default:
                try skipToLineEnd()
                return .other(name)
            }
        }
        let name = upper(try atom(what: "a response name", stop: RBRACKET))
        if let status = IMAPStatusResponse.Status(rawValue: name) {
            return .status(try statusResponse(status))
        }
        switch name {
        case "CAPABILITY":
            var capabilities: [String] = []
            while try !atLineEnd() {
                try space()
                capabilities.append(try atom(what: "a capability"))
            }
            return .capability(capabilities)
        case "FLAGS":
            try space()
            return .flags(try flagList())
        case "SEARCH":
            var numbers: [UInt32] = []
            while try !atLineEnd() {
                try space()
                if try peek() == LPAREN {
                    _ = try item()  // (MODSEQ n), RFC 7162
                } else {
                    numbers.append(try number32("a message number"))
                }
            }
            return .search(numbers)
        default:
            try skipToLineEnd()
            return .other(name)
        }
    }

    /// `[SP ["[" code "]" SP] text]` after a status word.
    mutating func statusResponse(_ status: IMAPStatusResponse.Status) throws -> IMAPStatusResponse {
        guard try !atLineEnd() else { return IMAPStatusResponse(status: status, text: "") }
        try space()
        var code: IMAPResponseCode?
        if try peek() == LBRACKET {
            p += 1
            code = try responseCode()
            if try peek() == SP { p += 1 }
        }
        return IMAPStatusResponse(status: status, code: code, text: try text())
    }

    /// The inside of `[…]` and the `]`.
    mutating func responseCode() throws -> IMAPResponseCode {
        let name = upper(try atom(what: "a response code", stop: RBRACKET))
        var args: Range<Int>?
        if try peek() == SP {
            p += 1
            let start = p
            var inQuote = false
            while true {
                let c = try peek()
                if c == CR || c == LF || c == 0 { throw fail(.malformed, "\(show(c)) in a response code") }
                if inQuote {
                    if c == BACKSLASH {
                        p += 1
                        let d = try peek()
                        guard d == DQUOTE || d == BACKSLASH else { throw fail(.malformed, "\\\(show(d)) in a quoted string") }
                    } else if c == DQUOTE {
                        inQuote = false
                    }
                } else if c == DQUOTE {
                    inQuote = true
                } else if c == RBRACKET {
                    break
                }
                p += 1
            }
            args = start..<p
        }
        try expect(RBRACKET, "']' after a response code")
        let codeEnd = p
        defer { p = codeEnd }
        switch name {
        case "ALERT": return .alert
        case "AUTHENTICATIONFAILED": return .authenticationFailed
        case "AUTHORIZATIONFAILED": return .authorizationFailed
        case "ALREADYEXISTS": return .alreadyExists
        case "NONEXISTENT": return .nonExistent
        case "TRYCREATE": return .tryCreate
        case "READ-ONLY": return .readOnly
        case "READ-WRITE": return .readWrite
        case "UIDVALIDITY", "UIDNEXT":
            guard let args else { throw fail(.malformed, "\(name) without a number") }
            p = args.lowerBound
            let n = try number32(name)
            guard p == args.upperBound else { throw fail(.malformed, "\(name) with more than a number") }
            return name == "UIDNEXT" ? .uidNext(n) : .uidValidity(n)
        case "CAPABILITY":
            guard let args else { return .capability([]) }
            return .capability(try words(args))
        case "PERMANENTFLAGS":
            guard let args, args.count >= 2, b[args.lowerBound] == LPAREN, b[args.upperBound - 1] == RPAREN else {
                throw fail(.malformed, "PERMANENTFLAGS without a list")
            }
            return .permanentFlags(try words((args.lowerBound + 1)..<(args.upperBound - 1)))
        default:
            guard let args else { return .other(name: name, arguments: nil) }
            guard let text = utf8(b[args]) else { throw IMAPProtocolError(.notUTF8, "a response code that is not UTF-8", offset: args.lowerBound) }
            return .other(name: name, arguments: text)
        }
    }

    /// Atoms separated by single spaces inside `range`.
    mutating func words(_ range: Range<Int>) throws -> [String] {
        var out: [String] = []
        p = range.lowerBound
        while p < range.upperBound {
            let start = p
            while p < range.upperBound, isAtomChar(b[p]), b[p] != RBRACKET { p += 1 }
            guard p > start else { throw fail(.malformed, "expected an atom, found \(show(b[p]))") }
            out.append(String(decoding: b[start..<p], as: UTF8.self))
            if p < range.upperBound {
                guard b[p] == SP, p + 1 < range.upperBound else { throw fail(.malformed, "expected one space between atoms") }
                p += 1
            }
        }
        return out
    }

    /// `(name value name value …)` of a FETCH.
    mutating func fetchAttributes() throws -> IMAPFetch {
        var fetch = IMAPFetch()
        try expect(LPAREN, "'(' after FETCH")
        if try peek() == RPAREN {
            p += 1
            return fetch
        }
        while true {
            let name = upper(try fetchAttributeName())
            try space()
            switch name {
            case "UID": fetch.uid = try number32("a UID")
            case "RFC822.SIZE": fetch.size = try number32("a size")
            case "FLAGS": fetch.flags = try flagList()
            case "BODY[]", "RFC822", "BINARY[]": fetch.body = try nstring()
            default: _ = try item()
            }
            let c = try peek()
            p += 1
            if c == RPAREN { return fetch }
            guard c == SP else {
                p -= 1
                throw fail(.malformed, "expected a space or ')' in FETCH, found \(show(c))")
            }
        }
    }

    /// An attribute name: an atom, then maybe `[section]` (which may hold spaces, lists and quoted
    /// strings) and `<origin>`.
    mutating func fetchAttributeName() throws -> String {
        let start = p
        while true {
            let c = try peek()
            guard isAtomChar(c), c != LBRACKET, c != RBRACKET else { break }
            p += 1
        }
        guard p > start else { throw fail(.malformed, "expected a FETCH attribute, found \(show(b[p]))") }
        if try peek() == LBRACKET {
            var depth = 0, inQuote = false
            p += 1
            while true {
                let c = try peek()
                if c == CR || c == LF || c == 0 { throw fail(.malformed, "\(show(c)) in a FETCH section") }
                p += 1
                if inQuote {
                    if c == BACKSLASH {
                        let d = try peek()
                        guard d == DQUOTE || d == BACKSLASH else { throw fail(.malformed, "\\\(show(d)) in a quoted string") }
                        p += 1
                    } else if c == DQUOTE {
                        inQuote = false
                    }
                } else if c == DQUOTE {
                    inQuote = true
                } else if c == LPAREN {
                    depth += 1
                    guard depth <= limits.maxDepth else { throw fail(.nestingTooDeep, "a FETCH section nested too deep") }
                } else if c == RPAREN {
                    depth -= 1
                    guard depth >= 0 else { throw fail(.malformed, "')' without '(' in a FETCH section") }
                } else if c == RBRACKET && depth == 0 {
                    break
                }
            }
            if try peek() == 0x3C {  // <origin>
                p += 1
                _ = try number32("a partial origin")
                try expect(0x3E, "'>'")
            }
        }
        guard let name = utf8(b[start..<p]) else { throw fail(.notUTF8, "a FETCH attribute that is not UTF-8") }
        return name
    }
}
