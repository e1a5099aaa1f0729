// A loopback world for the `mtasts check` benchmark: N domains dK.bench, each with an
// _mta-sts record, a policy host (all on one HTTPS server at 127.0.0.2:443 whose certificate
// names every policy host), an MX mxK.mx.bench (one SMTP server at 127.0.0.3:25, certificate
// *.mx.bench) and an _smtp._tls record; dnsmasq on 127.0.0.53:53 (port 53, so that peers that
// cannot take a port can use it). Prints the CA file and the domain list, then serves until killed.
import Foundation
import TestSupport

let count = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1000 : 1000
let dir = URL(fileURLWithPath: CommandLine.arguments.count > 2 ? CommandLine.arguments[2] : NSTemporaryDirectory())
try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
let ca = try TestCA()
let caFile = dir.appendingPathComponent("ca.pem").path
try ca.pem.write(toFile: caFile, atomically: true, encoding: .utf8)

var zone: [String] = []
var domains: [String] = []
for k in 0..<count {
    let d = "d\(k).bench"
    domains.append(d)
    zone.append("txt-record=_mta-sts.\(d),\"v=STSv1; id=b\(k);\"")
    zone.append("txt-record=_smtp._tls.\(d),\"v=TLSRPTv1; rua=mailto:tlsrpt@mx.bench\"")
    zone.append("host-record=mta-sts.\(d),127.0.0.2")
    zone.append("mx-host=\(d),mx\(k).mx.bench,10")
    zone.append("host-record=mx\(k).mx.bench,127.0.0.3")
}
zone.append("mx-host=mx.bench,mx0.mx.bench,10")
try domains.joined(separator: "\n").appending("\n").write(to: dir.appendingPathComponent("domains.txt"), atomically: true, encoding: .utf8)

let policy = "version: STSv1\nmode: enforce\nmx: *.mx.bench\nmax_age: 604800\n"
let policyLeaf = try ca.issue(dnsNames: domains.map { "mta-sts.\($0)" })
let policyHost = try TestServer.policyHost(address: "127.0.0.2", port: 443, leaf: policyLeaf, behaviour: .respond(status: 200, contentType: "text/plain", body: policy))
let mx = try TestServer.mx(address: "127.0.0.3", port: 25, hostname: "mx.bench", leaf: ca.issue(dnsNames: ["*.mx.bench"]), behaviour: .starttls)
let dns = try DNSMasq(lines: zone, localDomains: ["bench"], address: "127.0.0.53", fixedPort: 53)
FileHandle.standardOutput.write(Data("ready dns=\(dns.server) ca=\(caFile) domains=\(dir.appendingPathComponent("domains.txt").path)\n".utf8))
withExtendedLifetime((policyHost, mx, dns)) {
    while true { sleep(3600) }
}
