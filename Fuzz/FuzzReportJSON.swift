// libFuzzer target: the JSON parser and the tolerant TLS report decoder (bytes from senders).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzReportJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let decoded = try? TLSReport.decode(json: bytes) {
        // The canonical form must decode to the same report.
        let again = try? TLSReport.decode(json: decoded.report.encoded())
        precondition(again?.report == decoded.report, "canonical JSON does not round-trip")
    }
    if let value = try? JSONParser.parse(bytes).value {
        precondition((try? JSONParser.parse(Array(value.serialized().utf8)).value) != nil, "serialised JSON does not parse")
    }
    _ = RFC3339.parse(String(decoding: bytes, as: UTF8.self))
    return 0
}
