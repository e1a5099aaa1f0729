// libFuzzer target: netstring framing (bytes from socketmap clients).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNetstring(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // Take netstrings off the front until the input is used up, needs more, or is invalid.
    while !bytes.isEmpty {
        guard let outcome = try? NetstringParser.next(bytes, maxLength: 10_000) else { break }
        guard case .complete(let payload, let consumed) = outcome else { break }
        precondition(consumed > 0 && consumed <= bytes.count && payload.upperBound < consumed, "framing out of range")
        precondition(bytes[payload.upperBound] == UInt8(ascii: ","), "terminator not where it was found")
        bytes.removeFirst(consumed)
    }
    return 0
}
