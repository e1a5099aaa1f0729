import NIOCore

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

/// Decodes netstrings from a byte stream: one payload per netstring, pipelined requests in order,
/// a length limit checked before any payload is buffered.
public struct NetstringDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer
    public let maxLength: Int

    public init(maxLength: Int = 10_000) {
        self.maxLength = maxLength
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let payload = try Self.next(from: &buffer, maxLength: maxLength) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(payload))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A client that disconnects mid-request: what is left is dropped.
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }

    /// Takes one complete netstring off the front of `buffer`, or returns nil (and consumes
    /// nothing) when more bytes are needed. Throws for a stream that cannot be valid.
    public static func next(from buffer: inout ByteBuffer, maxLength: Int) throws(NetstringError) -> ByteBuffer? {
        let view = buffer.readableBytesView
        var length = 0
        var digits = 0
        var index = view.startIndex
        while index < view.endIndex {
            let b = view[index]
            if b == UInt8(ascii: ":") { break }
            guard b >= 0x30 && b <= 0x39 else { throw NetstringError(kind: .badLength) }
            length = length * 10 + Int(b - 0x30)
            digits += 1
            guard length <= maxLength, digits <= 10 else { throw NetstringError(kind: .tooLong) }
            index += 1
        }
        guard index < view.endIndex else { return nil }  // no ':' yet
        guard digits > 0 else { throw NetstringError(kind: .badLength) }
        let headerLength = digits + 1
        guard view.count >= headerLength + length + 1 else { return nil }
        guard view[view.startIndex + headerLength + length] == UInt8(ascii: ",") else { throw NetstringError(kind: .badTerminator) }
        buffer.moveReaderIndex(forwardBy: headerLength)
        let payload = buffer.readSlice(length: length)!
        buffer.moveReaderIndex(forwardBy: 1)
        return payload
    }
}

public enum Netstring {
    /// `LEN:payload,`
    public static func encode(_ payload: String) -> [UInt8] {
        Array("\(payload.utf8.count):".utf8) + Array(payload.utf8) + [UInt8(ascii: ",")]
    }
}
