import NIOCore

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
        let outcome = try NetstringParser.next(view, maxLength: maxLength)
        guard case .complete(let payload, let consumed) = outcome else { return nil }
        let slice = buffer.getSlice(at: buffer.readerIndex + payload.lowerBound, length: payload.count)!
        buffer.moveReaderIndex(forwardBy: consumed)
        return slice
    }
}

public enum Netstring {
    /// `LEN:payload,`
    public static func encode(_ payload: String) -> [UInt8] {
        var buffer = ByteBuffer()
        write(payload, to: &buffer)
        return Array(buffer.readableBytesView)
    }

    /// Appends `LEN:payload,` to `buffer`.
    public static func write(_ payload: String, to buffer: inout ByteBuffer) {
        buffer.writeString(String(payload.utf8.count))
        buffer.writeInteger(UInt8(ascii: ":"))
        buffer.writeString(payload)
        buffer.writeInteger(UInt8(ascii: ","))
    }
}
