import Foundation

/// How text output is decorated: ANSI colours on a terminal, plain otherwise. The libraries render
/// their answers with a style; the command line picks it (a terminal without NO_COLOR).
public struct TextStyle: Sendable {
    public var colour: Bool
    public init(colour: Bool) { self.colour = colour }
    public static let plain = TextStyle(colour: false)

    public func paint(_ text: String, _ code: String) -> String { colour ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
    public func red(_ t: String) -> String { paint(t, "31") }
    public func green(_ t: String) -> String { paint(t, "32") }
    public func yellow(_ t: String) -> String { paint(t, "33") }
    public func bold(_ t: String) -> String { paint(t, "1") }
    public func dim(_ t: String) -> String { paint(t, "2") }

    /// One diagnostic as a line of a lint answer.
    public func line(for d: Diagnostic, indent: String = "  ") -> String {
        let label: String
        switch d.severity {
        case .error: label = red("error")
        case .warning: label = yellow("warning")
        case .info: label = dim("note")
        }
        return indent + (d.line.map { "line \($0): " } ?? "") + "\(label): \(d.message) " + dim("[\(d.code)]")
    }

    /// A success rate as "99.50 %" ("-" without sessions); the sum is done in Double, so it cannot trap.
    public static func percent(_ ok: Int64, _ failed: Int64, digits: Int = 2) -> String {
        let total = Double(ok) + Double(failed)
        guard total > 0 else { return "-" }
        return String(format: "%.\(digits)f %%", Double(ok) / total * 100)
    }
}

/// CSV with RFC 4180 quoting.
public enum CSV {
    public static func line(_ fields: [String]) -> String {
        fields.map { f in
            f.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) ? "\"" + f.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : f
        }.joined(separator: ",") + "\r\n"
    }
}

extension Diagnostic {
    public var json: JSONValue {
        var m: [JSONMember] = []
        if let line { m.append(JSONMember("line", .int(Int64(line)))) }
        m.append(JSONMember("code", .string(code)))
        m.append(JSONMember("severity", .string(severity.rawValue)))
        m.append(JSONMember("message", .string(message)))
        return .object(m)
    }
}

extension Array where Element == Diagnostic {
    public var errorsJSON: JSONValue { .array(errors.map(\.json)) }
    public var warningsJSON: JSONValue { .array(warnings.map(\.json)) }
}
