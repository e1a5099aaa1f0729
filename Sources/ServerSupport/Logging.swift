import Foundation
import Logging

/// One log line format for every role (swift-log): `2026-12-01T21:00:00Z info serve: message key=value`
/// on standard error. Under systemd (JOURNAL_STREAM set) the time stamp is left to the journal and
/// the line starts with the syslog priority (`<6>`), which journald reads as the level.
public struct LineLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public let label: String
    private let journald: Bool
    private let sink: @Sendable (String) -> Void

    public init(label: String, level: Logger.Level, journald: Bool = LineLogHandler.underJournald,
                sink: @escaping @Sendable (String) -> Void = LineLogHandler.standardError) {
        self.label = label
        self.logLevel = level
        self.journald = journald
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public static let underJournald = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil

    public static let standardError: @Sendable (String) -> Void = { line in
        line.utf8CString.withUnsafeBufferPointer { buffer in
            var offset = 0
            let count = buffer.count - 1
            while offset < count {
                let n = write(2, buffer.baseAddress! + offset, count - offset)
                if n <= 0 { if errno == EINTR { continue }; return }
                offset += n
            }
        }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        var line = journald ? "<\(Self.priority(event.level))>" : RFC3339Now.string() + " "
        line += "\(event.level) \(label): \(Self.oneLine(event.message.description))"
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) { line += " \(key)=\(Self.oneLine(value.description))" }
        sink(line + "\n")
    }

    /// A log line stays one line: CR, LF and other control characters from outside data are escaped.
    static func oneLine(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return text }
        var out = ""
        for s in text.unicodeScalars {
            switch s.value {
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0..<0x20, 0x7F: out += String(format: "\\x%02x", s.value)
            default: out.unicodeScalars.append(s)
            }
        }
        return out
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }
}

/// The process's logging, set once by the command line (`--log-level`, MTASTS_LOG_LEVEL).
public enum Log {
    private static let bootstrapped = NSLock()
    nonisolated(unsafe) private static var done = false

    /// Installs the line format at `level` (idempotent: the first call wins, as swift-log requires).
    public static func bootstrap(level: Logger.Level) {
        bootstrapped.lock()
        defer { bootstrapped.unlock() }
        guard !done else { return }
        done = true
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: level) }
    }

    /// A component's logger: `serve`, `daemon`, `resolver`, `collector`, `reports`, ...
    public static func logger(_ component: String) -> Logger { Logger(label: component) }

    /// `--log-level` values.
    public static func level(_ text: String) -> Logger.Level? { Logger.Level(rawValue: text.lowercased()) }
}

/// UTC time stamps to the second, without Foundation's formatter (cheap on every log line).
enum RFC3339Now {
    static func string() -> String {
        var t = time(nil)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }
}

/// At most `perWindow` warnings per `window` seconds; the ones left out are counted and said in
/// the first line logged after them (a failure that repeats for every datagram or every cached
/// domain must not flood the log; the metrics count them all).
public final class WarningLimiter: @unchecked Sendable {
    private let lock = NSLock()
    private var windowStart = -Double.infinity
    private var lines = 0
    private var suppressed = 0
    public let perWindow: Int
    public let window: Double

    public init(perWindow: Int, window: Double) {
        self.perWindow = perWindow
        self.window = window
    }

    /// Logs `message` at warning level unless the window's lines are used up; returns the line
    /// logged (nil: counted, not logged). `now` in seconds (monotonic by default).
    @discardableResult
    public func warn(_ logger: Logger, _ message: @autoclosure () -> String,
                     now: Double = Double(DispatchTime.now().uptimeNanoseconds) / 1e9) -> String? {
        lock.lock()
        var left = 0
        if now - windowStart >= window {
            left = suppressed
            (windowStart, lines, suppressed) = (now, 0, 0)
        }
        guard lines < perWindow else {
            suppressed += 1
            lock.unlock()
            return nil
        }
        lines += 1
        lock.unlock()
        let line = message() + (left > 0 ? " (\(left) more like it not logged before this)" : "")
        logger.warning("\(line)")
        return line
    }
}
