// libFuzzer target: netstring framing and socketmap requests (bytes from socketmap clients).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNetstring(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // Take netstrings off the front until the input is used up, needs more, or is invalid.
    while !bytes.isEmpty {
        guard let outcome = try? NetstringParser.next(bytes, maxLength: 10_000) else { break }
        guard case .complete(let payload, let consumed) = outcome else { break }
        precondition(consumed > 0 && consumed <= bytes.count && payload.upperBound < consumed, "framing out of range")
        precondition(bytes[payload.upperBound] == UInt8(ascii: ","), "terminator not where it was found")
        // The request inside: `name key`, the key as a next-hop, the replies one printable line.
        if let request = SocketmapRequest.parse(Array(bytes[payload])) {
            precondition(!request.name.isEmpty && !request.key.contains(" "), "request split wrongly")
            if let domain = SocketmapKey.policyDomain(request.key) {
                precondition(!domain.text.isEmpty && domain.text == domain.text.lowercased(), "policy domain not normalised")
            }
            let temp = SocketmapReply.temporary(request.key)
            precondition(temp.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F }, "reply not printable ASCII")
        }
        bytes.removeFirst(consumed)
    }
    return 0
}
