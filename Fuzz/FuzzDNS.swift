// libFuzzer target: the DNS response parser (bytes from a DNS server).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDNS(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let message = try? DNSMessage(parsing: bytes) {
        for record in message.answers {
            precondition(record.name.utf8.count <= 255 + 64, "a name longer than the wire allows")
        }
    }
    return 0
}
