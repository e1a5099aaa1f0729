/// Netstring framing over plain bytes (no NIO), shared by the channel decoder and the fuzz target.
public enum NetstringParser {
    public enum Outcome: Equatable, Sendable {
        /// A complete netstring: its payload is `payload` (offsets into the input), and `consumed`
        /// bytes (header, payload, terminator) can be dropped.
        case complete(payload: Range<Int>, consumed: Int)
        /// More bytes are needed; nothing is consumed.
        case needMoreData
    }

    /// Looks at the front of `bytes` for one netstring of at most `maxLength` payload bytes.
    public static func next<C: RandomAccessCollection>(_ bytes: C, maxLength: Int) throws(NetstringError) -> Outcome where C.Element == UInt8, C.Index == Int {
        var length = 0
        var digits = 0
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let b = bytes[index]
            if b == UInt8(ascii: ":") { break }
            guard b >= 0x30 && b <= 0x39 else { throw NetstringError(kind: .badLength) }
            length = length * 10 + Int(b - 0x30)
            digits += 1
            guard length <= maxLength, digits <= 10 else { throw NetstringError(kind: .tooLong) }
            index += 1
        }
        guard index < bytes.endIndex else { return .needMoreData }  // no ':' yet
        guard digits > 0 else { throw NetstringError(kind: .badLength) }
        let start = bytes.startIndex + digits + 1
        guard bytes.count >= digits + 1 + length + 1 else { return .needMoreData }
        guard bytes[start + length] == UInt8(ascii: ",") else { throw NetstringError(kind: .badTerminator) }
        return .complete(payload: (start - bytes.startIndex)..<(start - bytes.startIndex + length), consumed: digits + 1 + length + 1)
    }
}

/// Why a netstring stream cannot be read further (the Postfix socketmap protocol frames every
/// request and reply as a netstring, `LEN ":" BYTES ","`).
public struct NetstringError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case badLength = "the length is not a decimal number"
        case tooLong = "the request is longer than the limit"
        case badTerminator = "the netstring does not end in ','"
    }
    public var kind: Kind
    public init(kind: Kind) { self.kind = kind }
    public var description: String { kind.rawValue }
}
