// libFuzzer target: the _mta-sts and _smtp._tls TXT record parsers (bytes from DNS).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRecords(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // The input is split at 0x00 into RRs and at 0x01 into character-strings.
    let rrset = bytes.split(separator: 0, omittingEmptySubsequences: false).map { rr in
        rr.split(separator: 1, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    }
    if let record = STSRecord.select(rrset).record {
        precondition(STSRecord.parse(record.text).record?.id == record.id, "STS record does not round-trip")
    }
    if let record = TLSRPTRecord.select(rrset).record {
        precondition(TLSRPTRecord.parse(record.text).record?.rua == record.rua, "TLSRPT record does not round-trip")
    }
    if let first = rrset.first?.first {
        _ = MXPattern.matches(host: first, pattern: rrset.first?.last ?? "")
        _ = try? DomainName(first)
    }
    return 0
}
