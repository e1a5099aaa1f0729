// libFuzzer target: the MTA-STS policy parser (bytes from a policy host).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPolicy(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let result = STSPolicy.parse(bytes)
    if let policy = result.policy {
        // What we render must parse back to the same policy.
        let again = STSPolicy.parse(policy.render()).policy
        precondition(again?.mode == policy.mode && again?.mx == policy.mx, "render does not round-trip")
    }
    return 0
}
