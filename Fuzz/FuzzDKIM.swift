// libFuzzer target: DKIM message splitting, tag lists and canonicalisation (the parts of DKIM
// that read outside bytes before any cryptography). Checks that canonicalisation is idempotent
// for bodies (relaxed and simple) and that relaxed header output is one CRLF-terminated line.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDKIM(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let (headers, body) = DKIM.split(bytes)
    for relaxed in [true, false] {
        let once = DKIM.canonicalBody(body, relaxed: relaxed)
        if DKIM.canonicalBody(once, relaxed: relaxed) != once { fatalError("body canonicalisation is not idempotent (relaxed: \(relaxed))") }
    }
    for h in headers.prefix(50) {
        let line = DKIM.canonicalHeader(h, relaxed: true)
        if line.dropLast(2).contains(0x0A) || line.suffix(2) != [0x0D, 0x0A] { fatalError("relaxed header is not one line") }
        _ = DKIM.emptyB(h.raw)
        _ = DKIM.tags(String(decoding: h.value, as: UTF8.self))
    }
    if let signature = headers.first(where: { $0.name.lowercased() == "dkim-signature" }) {
        _ = DKIM.signedHeaderData(headers, names: ["from", "subject", "from"], signature: signature, relaxed: true)
        _ = DKIM.signedHeaderData(headers, names: ["from"], signature: signature, relaxed: false)
    }
    return 0
}
