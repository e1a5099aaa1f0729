// libFuzzer target: rua URIs from strangers' _smtp._tls records (mailto and https validation).
// Invariant: whatever the record says, an address we would write into RCPT TO:<…> or a To:
// header holds no CR, LF, NUL, control, space, '<' or '>', and validating it again changes nothing.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRUA(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    func check(_ address: String) {
        precondition(!address.utf8.contains { $0 < 0x21 || $0 == 0x7F || $0 == 0x3C || $0 == 0x3E }, "an unsafe mailbox passed: \(address.debugDescription)")
        precondition((try? MailAddress.validate(address)) == address, "mailbox validation is not idempotent: \(address.debugDescription)")
        precondition((try? MailHeader.line("To", address)) != nil, "the header writer refused a validated mailbox")
    }
    if case .mailto(let address, _)? = ReportURI.parse(text).0 { check(address) }
    if let address = try? MailAddress.validate(text) { check(address) }
    if let record = TLSRPTRecord.parse(text).record {
        for uri in record.rua { if case .mailto(let address, _) = uri { check(address) } }
        precondition(TLSRPTRecord.parse(record.text).record?.rua == record.rua, "TLSRPT record does not round-trip")
    }
    return 0
}
