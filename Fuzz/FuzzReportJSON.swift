// libFuzzer target: the JSON parser and the tolerant TLS report decoder (bytes from senders).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzReportJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let decoded = try? TLSReport.decode(json: bytes) {
        // Every count of an accepted report is in 0…2^53−1, and the sums saturate instead of trapping.
        for p in decoded.report.policies {
            precondition((0...9_007_199_254_740_991).contains(p.successfulSessions) && (0...9_007_199_254_740_991).contains(p.failedSessions), "a count out of range was accepted")
            for f in p.failureDetails { precondition((0...9_007_199_254_740_991).contains(f.failedSessionCount), "a detail count out of range was accepted") }
        }
        _ = decoded.report.totalSuccessful.saturatingAdd(decoded.report.totalFailed)
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
