/// One finding of a parser or linter: a stable machine `code`, a message a person understands and,
/// for line-based input, the 1-based line it concerns.
public struct Diagnostic: Hashable, Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable, Hashable, Comparable {
        case error, warning, info
        private var rank: Int { self == .error ? 0 : self == .warning ? 1 : 2 }
        public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
    }

    public var severity: Severity
    public var code: String
    public var message: String
    public var line: Int?

    public init(_ severity: Severity, _ code: String, _ message: String, line: Int? = nil) {
        self.severity = severity
        self.code = code
        self.message = message
        self.line = line
    }

    public var description: String {
        (line.map { "line \($0): " } ?? "") + "\(severity.rawValue): \(message) [\(code)]"
    }
}

extension Array where Element == Diagnostic {
    public var errors: [Diagnostic] { filter { $0.severity == .error } }
    public var warnings: [Diagnostic] { filter { $0.severity != .error } }
}
