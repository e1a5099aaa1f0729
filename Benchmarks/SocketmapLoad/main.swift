// A netstring load generator for socketmap daemons (ours and postfix-mta-sts-resolver):
// N connections, each a thread with a blocking socket that sends one request, waits for the
// reply, and sends the next (as Postfix's smtp processes do), over the given domains in turn.
// Prints look-ups per second, latency percentiles and the replies by kind.
//
// Usage: mtasts-bench-socketmap --port P --domains FILE [--host 127.0.0.1] [--connections 16]
//        [--seconds 10] [--name postfix] [--warm]
// --warm asks every domain once on one connection (fills the daemon's cache) and reports the replies.
import Foundation

var options: [String: String] = [:]
var flags: Set<String> = []
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    if a == "--warm" { flags.insert(a); continue }
    guard let v = args.popFirst() else { fatalError("\(a) needs a value") }
    options[a] = v
}
let host = options["--host"] ?? "127.0.0.1"
let port: UInt16 = options["--port"].flatMap { UInt16($0) } ?? { fatalError("--port is required") }()
let text: String = (options["--domains"].flatMap { path -> String? in try? String(contentsOfFile: path, encoding: .utf8) }) ?? { fatalError("--domains FILE is required") }()
let domains = text.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
let connections = Int(options["--connections"] ?? "16") ?? 16
let seconds = Double(options["--seconds"] ?? "10") ?? 10
let name = options["--name"] ?? "postfix"

func connectSocket() -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = inet_addr(host)
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard rc == 0 else { fatalError("connect \(host):\(port): \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    return fd
}

/// One request and its reply; nil when the connection broke.
final class Conn {
    let fd: Int32
    var buffer = [UInt8](repeating: 0, count: 65_536)
    var pending: [UInt8] = []
    init() { fd = connectSocket() }
    func ask(_ domain: String) -> String? {
        let payload = "\(name) \(domain)"
        let frame = Array("\(payload.utf8.count):\(payload),".utf8)
        guard frame.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == frame.count else { return nil }
        while true {
            if let colon = pending.firstIndex(of: UInt8(ascii: ":")), let len = Int(String(decoding: pending[..<colon], as: UTF8.self)), pending.count >= colon + 2 + len {
                let reply = String(decoding: pending[(colon + 1)..<(colon + 1 + len)], as: UTF8.self)
                pending.removeFirst(colon + 2 + len)
                return reply
            }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return nil }
            pending += buffer[0..<n]
        }
    }
}

@Sendable func kind(_ reply: String) -> String {
    if reply.hasPrefix("OK ") { return "ok" }
    if reply.hasPrefix("NOTFOUND") { return "notfound" }
    return String(reply.prefix(4)).trimmingCharacters(in: .whitespaces).lowercased()
}

if flags.contains("--warm") {
    let c = Conn()
    var kinds: [String: Int] = [:]
    let start = Date()
    for d in domains { kinds[c.ask(d).map(kind) ?? "broken", default: 0] += 1 }
    print("warm domains=\(domains.count) seconds=\(String(format: "%.2f", Date().timeIntervalSince(start))) replies=\(kinds.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ","))")
    exit(0)
}

let lock = NSLock()
var latencies: [UInt32] = []
var kinds: [String: Int] = [:]
let deadline = Date().addingTimeInterval(seconds)
let group = DispatchGroup()
for t in 0..<connections {
    group.enter()
    let thread = Thread {
        let c = Conn()
        var mine: [UInt32] = []
        mine.reserveCapacity(1_000_000)
        var myKinds: [String: Int] = [:]
        // Each connection starts at its own place (far apart when the list is long: a run over a
        // million domains asks each one once).
        var i = t * max(7919, domains.count / connections)
        var now = DispatchTime.now().uptimeNanoseconds
        let end = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        while now < end {
            let d = domains[i % domains.count]
            i += 1
            let reply = c.ask(d)
            let after = DispatchTime.now().uptimeNanoseconds
            mine.append(UInt32(min((after - now) / 1000, UInt64(UInt32.max))))
            myKinds[reply.map(kind) ?? "broken", default: 0] += 1
            now = after
            if reply == nil { break }
        }
        lock.withLock {
            latencies += mine
            for (k, v) in myKinds { kinds[k, default: 0] += v }
        }
        group.leave()
    }
    thread.start()
}
group.wait()
_ = deadline
latencies.sort()
func pct(_ p: Double) -> UInt32 { latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
// The generator's own CPU per look-up: it shares the cores with the server, so this says how much
// of the machine it takes (getrusage of this process, user + system).
var usage = rusage()
getrusage(RUSAGE_SELF.rawValue, &usage)
let clientCPU = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
print("connections=\(connections) client_cpu_us_per_lookup=\(String(format: "%.1f", clientCPU / Double(max(1, latencies.count)))) lookups=\(latencies.count) seconds=\(seconds) lookups_per_s=\(Int(Double(latencies.count) / seconds)) p50_us=\(pct(0.5)) p99_us=\(pct(0.99)) max_us=\(latencies.last ?? 0) replies=\(kinds.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ","))")
