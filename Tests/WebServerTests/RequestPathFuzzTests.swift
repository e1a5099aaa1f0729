import Foundation
import HTTPTypes
import Hummingbird
import MTASTSConfig
import MTASTSCore
import NIOCore
import NIOEmbedded
import ServerSupport
import Testing
import TLSRPTReceiver
@testable import WebServer

/// The HTTP request path of `mtasts serve` under hostile input, in process (issue: hostile
/// input): requests built from the kept corpus (`Fuzz/corpus/serve`) and from seeded random
/// mutations of them go through the real responder (policy host, routes, API, report endpoint,
/// error mapping). Every answer must be a well-formed HTTP status below 500 — a 500 would be an
/// error nobody mapped, a trap would end the test run. This is a mutation test with a fixed
/// seed (reproducible), not a coverage-guided fuzzer: the libFuzzer targets cover the parsers
/// underneath (report JSON, report mail, rua, records).
@Suite struct RequestPathFuzzTests {
    static let words: [String] = [
        "/", "/tlsrpt", "/api/reports", "/api/summary", "/api/readiness/example.com", "/api/reports/1", "/.well-known/mta-sts.txt",
        "/healthz", "/metrics", "?", "&", "=", "%", "%zz", "%00", "%0D%0A", "..", "//", "domain=", "days=", "limit=", "since=", "until=",
        "authenticated=", "min_days=", "tolerance=", "-1", "0", "99999999999999999999", "1e308", "NaN", "2026-11-30", "9999-99-99",
        "mta-sts.example.com", "MTA-STS.EXAMPLE.COM.", "localhost", "[::1]", "\u{0}", "é", "\r\n",
        "/domains/example.com", "/domains/example.com/reports?", "/reports/1", "/reports/1/raw", "organization=", "mx=", "ip=", "type=",
        "Authorization: Basic eDp5", "Authorization: Bearer x", "Host: evil.example",
    ]

    /// One request from bytes: `METHOD PATH` on the first line, `Name: value` lines, a blank
    /// line, the body.
    static func request(_ bytes: [UInt8]) -> Request? {
        let text = String(decoding: bytes, as: UTF8.self)
        let (head, body) = text.range(of: "\n\n").map { (String(text[..<$0.lowerBound]), String(text[$0.upperBound...])) } ?? (text, "")
        var lines = head.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard !lines.isEmpty else { return nil }
        let first = lines.removeFirst().split(separator: " ", maxSplits: 1).map(String.init)
        let method = HTTPRequest.Method(first.first ?? "GET") ?? .get
        var path = first.count > 1 ? first[1] : "/"
        if !path.hasPrefix("/") { path = "/" + path }
        var fields = HTTPFields()
        var authority = "localhost"
        for line in lines {
            let parts = line.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, let name = HTTPField.Name(parts[0].trimmingCharacters(in: .whitespaces)) else { continue }
            let value = parts[1].trimmingCharacters(in: .whitespaces)
            if name.canonicalName == "host" { authority = value; continue }
            guard value.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7F }) else { continue }  // what NIO's parser lets through
            fields.append(HTTPField(name: name, value: value))
        }
        let requestHead = HTTPRequest(method: method, scheme: "http", authority: authority, path: path, headerFields: fields)
        return Request(head: requestHead, body: .init(buffer: ByteBuffer(string: body)))
    }

    static func seeds() throws -> [[UInt8]] {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fuzz/corpus/serve").standardized
        let files = try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil).sorted { $0.path < $1.path }
        return try files.map { Array(try Data(contentsOf: $0)) }
    }

    /// A small deterministic generator (SplitMix64): the same inputs on every run.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }
    }

    static func mutate(_ input: [UInt8], _ random: inout Random) -> [UInt8] {
        var bytes = input
        for _ in 0...random.below(4) {
            switch random.below(5) {
            case 0 where !bytes.isEmpty: bytes.remove(at: random.below(bytes.count))
            case 1: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: random.below(bytes.count + 1))
            case 2:
                let word = Array(words[random.below(words.count)].utf8)
                bytes.insert(contentsOf: word, at: random.below(bytes.count + 1))
            case 3 where bytes.count > 1:
                let i = random.below(bytes.count), j = random.below(bytes.count)
                bytes.swapAt(i, j)
            default:
                bytes += Array(words[random.below(words.count)].utf8)
            }
        }
        return Array(bytes.prefix(8_192))
    }

    @Test("the kept corpus and 5,000 seeded mutations of it: every answer is a status below 500, never a trap")
    func requestPath() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reqfuzz-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var config = ServeConfig()
        config.database = dir.appendingPathComponent("r.db").path
        config.policies = ["example.com": "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"]
        let web = ReportWebService(config: config, store: try ReportStore(url: config.database), clock: ManualClock(1_795_000_000))
        let responder = web.router(apiAllowed: true).buildResponder()
        let channel = NIOAsyncTestingChannel()  // thread-safe: the responder runs on whatever thread the task is on
        let seeds = try Self.seeds()
        #expect(seeds.count >= 10, "the kept corpus Fuzz/corpus/serve is missing")
        var random = Random(state: 20_261_202)
        var inputs = seeds
        // MTASTS_SERVE_FUZZ_RUNS raises the count for a campaign (SECURITY.md); CI runs 5,000.
        let runs = ProcessInfo.processInfo.environment["MTASTS_SERVE_FUZZ_RUNS"].flatMap(Int.init) ?? 5_000
        for _ in 0..<runs { inputs.append(Self.mutate(seeds[random.below(seeds.count)], &random)) }
        var statuses: [Int: Int] = [:]
        for input in inputs {
            guard let request = Self.request(input) else { continue }
            let context = BasicRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: web.logger))
            let code: Int
            do { code = try await responder.respond(to: request, context: context).status.code } catch let error as HTTPResponseError {
                code = error.status.code
            }
            statuses[code, default: 0] += 1
            #expect(code < 500 || code == 503, "\(code) for \(String(decoding: input, as: UTF8.self).debugDescription)")
        }
        #expect(statuses.values.reduce(0, +) > runs * 4 / 5)
        print("request path: \(inputs.count) requests, statuses \(statuses.sorted { $0.key < $1.key })")
        #expect(statuses.keys.contains(200) && statuses.keys.contains(400) && statuses.keys.contains(404), "\(statuses)")
    }
}
