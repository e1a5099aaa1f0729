import Foundation

/// A dnsmasq serving a generated zone on 127.0.0.1 and a free port, for the test's lifetime.
/// Unknown names under the local domains get NXDOMAIN; names under `failing` domains are
/// forwarded to a closed port, so they fail (SERVFAIL/REFUSED) as a broken upstream would.
public final class DNSMasq: @unchecked Sendable {
    public let port: UInt16
    public let address: String
    public var server: String { "\(address):\(port)" }
    private let process: Spawned
    private let directory: URL

    public struct Missing: Error, CustomStringConvertible {
        public var description: String
    }

    /// - Parameter lines: dnsmasq configuration lines (`txt-record=…`, `mx-host=…`, `host-record=…`,
    ///   `cname=…`, `dns-rr=…`).
    public init(lines: [String], localDomains: [String] = ["test"], failing: [String] = [], address: String = "127.0.0.1", fixedPort: UInt16? = nil) throws {
        self.address = address
        let binary = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let binary else { throw Missing(description: "dnsmasq is not installed (apt-get install dnsmasq-base); scripts/setup.sh installs it") }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("dnsmasq-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var lastError = ""
        for _ in 0..<20 {
            let port = fixedPort ?? UInt16.random(in: 20_000...60_000)
            var config = [
                "port=\(port)", "listen-address=\(address)", "bind-interfaces", "no-resolv", "no-hosts", "user=root",
                "pid-file=", "log-facility=\(directory.path)/log",
            ]
            config += localDomains.map { "local=/\($0)/" }
            config += failing.map { "server=/\($0)/127.0.0.1#9" }
            config += lines
            let file = directory.appendingPathComponent("dnsmasq.conf")
            try config.joined(separator: "\n").appending("\n").write(to: file, atomically: true, encoding: .utf8)
            let errPath = directory.appendingPathComponent("stderr").path
            let p = try Spawned(binary, ["--conf-file=\(file.path)", "--keep-in-foreground"], stderrPath: errPath)
            // dnsmasq exits at once when the port is taken; otherwise it is serving after its bind.
            Thread.sleep(forTimeInterval: 0.15)
            if !p.hasExited, DNSMasq.portAnswers(port, address) {
                self.port = port
                self.process = p
                return
            }
            p.stop()
            lastError = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        }
        throw Missing(description: "dnsmasq did not start: \(lastError)")
    }

    /// Is something bound to UDP 127.0.0.1:port? (A bind that fails with EADDRINUSE says yes.)
    private static func portAnswers(_ port: UInt16, _ address: String) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr(address)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        return rc != 0
    }

    /// The log (queries are logged when `log-queries` is among the lines).
    public var log: String { (try? String(contentsOf: directory.appendingPathComponent("log"), encoding: .utf8)) ?? "" }

    deinit {
        process.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
