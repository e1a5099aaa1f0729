import CZlib

/// gzip through the system zlib, with a hard cap on the inflated size so that a gzip bomb is
/// refused after at most `maxSize` bytes of output, never inflated whole.
public enum Gzip {
    public struct Failure: Error, Sendable, CustomStringConvertible, Equatable {
        public var reason: String
        public var description: String { reason }
    }

    /// Does the data begin with the gzip magic bytes 0x1f 0x8b?
    public static func isGzip<C: Collection>(_ data: C) -> Bool where C.Element == UInt8 {
        var it = data.makeIterator()
        return it.next() == 0x1F && it.next() == 0x8B
    }

    /// Inflates gzip (or zlib) data, concatenated members included.
    public static func decompress(_ input: [UInt8], maxSize: Int) throws(Failure) -> [UInt8] {
        guard !input.isEmpty else { throw Failure(reason: "the gzip data is empty") }
        var output: [UInt8] = []
        var consumed = 0
        repeat {
            let (chunk, used) = try inflateMember(input, from: consumed, maxSize: maxSize - output.count)
            if output.isEmpty { output = chunk } else { output += chunk }
            consumed += used
            // Trailing zero padding after a member is tolerated.
            while consumed < input.count && input[consumed] == 0 { consumed += 1 }
        } while consumed < input.count && isGzip(input[consumed...])
        if consumed < input.count {
            throw Failure(reason: "\(input.count - consumed) bytes of garbage after the gzip data")
        }
        return output
    }

    private static func inflateMember(_ input: [UInt8], from offset: Int, maxSize: Int) throws(Failure) -> ([UInt8], Int) {
        var stream = z_stream()
        guard mtasts_inflate_init_gzip(&stream) == Z_OK else { throw Failure(reason: "zlib could not start") }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        // Scratch space zlib writes into (not zeroed first: it is only read where zlib wrote).
        let buffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: 65_536)
        defer { buffer.deallocate() }
        var status: Int32 = Z_OK
        let total = input.count - offset
        let result: Result<Int, Failure> = input.withUnsafeBufferPointer { inBuf in
            stream.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress! + offset)
            stream.avail_in = uInt(total)
            while true {
                stream.next_out = buffer.baseAddress
                stream.avail_out = uInt(buffer.count)
                status = inflate(&stream, Z_NO_FLUSH)
                let produced = buffer.count - Int(stream.avail_out)
                if status != Z_OK && status != Z_STREAM_END && !(status == Z_BUF_ERROR && produced > 0) {
                    let message = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                    return .failure(Failure(reason: status == Z_BUF_ERROR ? "the gzip data is truncated" : "the gzip data is corrupt: \(message)"))
                }
                if output.count + produced > maxSize {
                    return .failure(Failure(reason: "the data inflates to more than \(maxSize) bytes"))
                }
                output.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[0..<produced]))
                if status == Z_STREAM_END { return .success(total - Int(stream.avail_in)) }
                if produced == 0 && stream.avail_in == 0 {
                    return .failure(Failure(reason: "the gzip data is truncated"))
                }
            }
        }
        let used = try result.get()
        return (output, used)
    }

    /// Compresses into one gzip member.
    public static func compress(_ input: [UInt8], level: Int32 = 6) -> [UInt8] {
        var stream = z_stream()
        guard mtasts_deflate_init_gzip(&stream, level) == Z_OK else { fatalError("zlib deflateInit2 failed") }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))) + 32)
        let written: Int = input.withUnsafeBufferPointer { inBuf in
            output.withUnsafeMutableBufferPointer { outBuf in
                stream.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress)
                stream.avail_in = uInt(inBuf.count)
                stream.next_out = outBuf.baseAddress
                stream.avail_out = uInt(outBuf.count)
                let status = deflate(&stream, Z_FINISH)
                precondition(status == Z_STREAM_END, "deflate with deflateBound space must finish")
                return outBuf.count - Int(stream.avail_out)
            }
        }
        output.removeSubrange(written...)
        return output
    }
}
