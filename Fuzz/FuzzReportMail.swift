// libFuzzer target: the report reader (gzip, MIME mail, base64, quoted-printable, filenames).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzReportMail(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? ReportReader.read(bytes, maxSize: 1 << 20)
    _ = try? ReportReader.readMail(bytes, maxSize: 1 << 20)
    _ = try? Gzip.decompress(bytes, maxSize: 1 << 20)
    let text = String(decoding: bytes, as: UTF8.self)
    _ = MediaType(parsing: text)
    _ = ReportFilename.parse(text)
    _ = ReportSubject.parse(text)
    return 0
}
