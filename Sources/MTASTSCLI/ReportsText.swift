import Foundation
import MTASTSCore
import TLSRPTReceiver

extension Readiness {
    var text: String {
        var out = "\(domain): "
        switch verdict {
        case .ready: out += Console.green("ready for enforce")
        case .notReady: out += Console.red("not ready for enforce")
        case .insufficientData: out += Console.yellow("not enough data")
        }
        out += "  (\(since) – \(until), \(daysWithReports.count) day(s) with reports, \(reports) report(s), \(successful + failed) sessions)\n"
        for r in reasons { out += "  - \(r)\n" }
        if !modes.isEmpty { out += "  modes reported: " + modes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n" }
        for p in problems {
            out += "  \(p.impact == "policy" ? Console.yellow("policy") : Console.red("would fail")): \(p.organization): \(p.resultType) × \(p.sessions)"
            out += " on \(p.days.joined(separator: ", "))"
            if !p.mxHosts.isEmpty { out += "; MX \(p.mxHosts.joined(separator: ", "))" }
            if !p.receivingIPs.isEmpty { out += "; IP \(p.receivingIPs.joined(separator: ", "))" }
            out += "\n      \(p.explanation)\n"
            if let e = p.example { out += "      reported: \(e)\n" }
        }
        return out
    }
}

/// CSV with RFC 4180 quoting.
enum CSV {
    static func line(_ fields: [String]) -> String {
        fields.map { f in
            f.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) ? "\"" + f.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : f
        }.joined(separator: ",") + "\r\n"
    }
}
