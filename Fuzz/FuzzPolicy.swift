// libFuzzer target: the MTA-STS policy parser (bytes from a policy host), and the policy cache's
// canonical reading, which must never accept what the full parser reads differently, and the
// memory cache's compact form.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPolicy(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let result = STSPolicy.parse(bytes)
    if let policy = result.policy {
        // What we render must parse back to the same policy.
        let again = STSPolicy.parse(policy.render()).policy
        precondition(again?.mode == policy.mode && again?.mx == policy.mx, "render does not round-trip")
        if policy.extensions.isEmpty {
            precondition(STSPolicy.parseCanonical(policy.render(lineEnding: "\n")) == policy, "the canonical reading misses what the cache writes")
        }
        if let compact = policy.compactBytes {
            precondition(STSPolicy(compact: compact[...]) == policy, "the compact form does not round-trip")
        }
    }
    if let text = String(validating: bytes, as: UTF8.self), let fast = STSPolicy.parseCanonical(text) {
        precondition(fast == result.policy, "the canonical reading disagrees with the parser")
    }
    // The compact reader on any bytes: never a crash, and what it accepts is a policy the
    // parser reads the same from its text.
    if let compact = STSPolicy(compact: bytes[...]) {
        precondition(STSPolicy.parse(compact.render()).policy == compact, "the compact reader accepts what is no policy")
    }
    return 0
}
