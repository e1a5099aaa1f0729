// libFuzzer target: IMAP server responses (bytes from an IMAP server, which may be hostile).
// Compiled into one module with Sources/IMAP/IMAPResponse.swift (pure Swift, no imports).
//
// Invariants: every response taken has 0 < consumed <= the bytes left, so taking responses off
// the front ends; a stop for more asks for more than there is; an oversized literal's size digits
// are digits inside the input; and the stream gives the same responses whether the bytes come in
// one piece or in small chunks (the first byte picks the chunk size), with literals past a small
// limit dropped, and fails in chunks only where it fails whole.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIMAP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let limits = IMAPParserLimits(maxLine: 4096, maxLiteral: 512, maxLiterals: 8, maxDepth: 8)

    // The parser, response after response.
    var start = 0
    parsing: while start < bytes.count {
        guard let step = try? IMAPResponseParser.next(bytes, from: start, limits: limits) else { break }
        switch step {
        case .response(_, let consumed):
            precondition(consumed > 0 && consumed <= bytes.count - start, "consumed out of range")
            start += consumed
        case .needMore(.bytes(let count)):
            precondition(count > bytes.count - start, "asked for bytes it had")
            break parsing
        case .needMore(.lineEnd):
            break parsing
        case .oversizedLiteral(let size, let digits, let dataStart):
            precondition(size > 0 && !digits.isEmpty && digits.upperBound < dataStart && dataStart <= bytes.count - start, "literal header out of range")
            precondition(bytes[(start + digits.lowerBound)..<(start + digits.upperBound)].allSatisfy { $0 >= 0x30 && $0 <= 0x39 }, "size digits are not digits")
            break parsing
        }
    }

    // The stream, whole and in chunks.
    func run(chunk: Int) -> ([IMAPResponseStream.Frame], Bool) {
        var stream = IMAPResponseStream(limits: limits)
        var frames: [IMAPResponseStream.Frame] = []
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + chunk, bytes.count)
            bytes[offset..<end].withUnsafeBytes { stream.append($0) }
            offset = end
            do {
                while let frame = try stream.next() {
                    frames.append(frame)
                    precondition(frames.count <= bytes.count, "more responses than bytes")
                }
            } catch {
                return (frames, true)
            }
        }
        return (frames, false)
    }
    let whole = run(chunk: max(bytes.count, 1))
    let chunked = run(chunk: Int(bytes.first ?? 1) % 13 + 1)
    precondition(whole.0 == chunked.0, "chunked stream gave other responses")
    // A chunked stream parses only when a line can have ended, so it may not yet have met an error
    // the whole input shows; it never finds one the whole input does not have.
    precondition(!chunked.1 || whole.1, "chunked stream failed where the whole did not")
    return 0
}
