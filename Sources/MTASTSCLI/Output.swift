import Foundation
import Logging
import ArgumentParser
import MTASTSCore
import ServerSupport

/// Exit codes, documented in the README and in `mtasts --help`.
public enum Exit {
    /// Everything checked is fine (warnings allowed).
    public static let ok: Int32 = 0
    /// Problems found: an invalid policy or record, a file that is not a report.
    public static let problems: Int32 = 1
    /// Usage error: bad arguments or options.
    public static let usage: Int32 = 2
    /// Temporary failure (DNS, network): try again later.
    public static let temporary: Int32 = 3
    /// EX_TEMPFAIL: a mail pipe (`reports ingest`) tells the MTA to keep the message and retry.
    public static let mailTemporary: Int32 = 75

    /// The one place an error becomes an exit code. `temporary` is 3, or 75 where a mail pipe
    /// reads the code.
    public static func code(for error: any Error, temporary: Int32 = Exit.temporary) -> Int32 {
        switch error {
        case let exit as ExitCode: return exit.rawValue
        case is ValidationError: return usage
        case let convertible as MTASTSErrorConvertible:
            let e = convertible.mtastsError
            if e.temporary { return temporary }
            switch e.code {
            case .usage, .configuration: return usage
            case .invalidInput, .notFound: return problems
            case .dns, .network, .storage, .setup: return Exit.temporary
            }
        default: return problems
        }
    }
}

/// Writing to stdout (results) and stderr (logs), with colour only on a terminal without NO_COLOR.
struct Console {
    static let colour: Bool = isatty(1) != 0 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil

    static func out(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    /// Bytes to standard output with write(2), whole (short writes and EINTR retried; a closed
    /// pipe ends the writing): no copy into Data on the way.
    static func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(1, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return }
                offset += n
            }
        }
    }

    static func err(_ text: String) {
        FileHandle.standardError.write(Data(("mtasts: " + text + "\n").utf8))
    }

    static let style = TextStyle(colour: colour)
    static func red(_ t: String) -> String { style.red(t) }
    static func green(_ t: String) -> String { style.green(t) }
    static func yellow(_ t: String) -> String { style.yellow(t) }
    static func bold(_ t: String) -> String { style.bold(t) }
    static func dim(_ t: String) -> String { style.dim(t) }
    static func line(for d: Diagnostic) -> String { style.line(for: d) }
}

/// `--log-level` for the long-running commands (serve, daemon); MTASTS_LOG_LEVEL when not given.
struct LoggingOptions: ParsableArguments {
    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical (default: info, or MTASTS_LOG_LEVEL).", valueName: "LEVEL"))
    var logLevel: String?

    func validate() throws {
        if let logLevel, Log.level(logLevel) == nil { throw ValidationError("--log-level must be trace, debug, info, notice, warning, error or critical, not '\(logLevel)'") }
    }

    /// Logging is set up once, before the arguments are parsed (`MTASTS.runMain`), so that every
    /// command's libraries log through the same handler; this reads `--log-level` for it.
    static func level(in arguments: [String]) -> Logger.Level {
        var text = ProcessInfo.processInfo.environment["MTASTS_LOG_LEVEL"]
        for (i, a) in arguments.enumerated() {
            if a == "--log-level", i + 1 < arguments.count { text = arguments[i + 1] }
            if a.hasPrefix("--log-level=") { text = String(a.dropFirst("--log-level=".count)) }
        }
        return text.flatMap(Log.level) ?? .info
    }
}

/// Help text is written as paragraphs; the terminal width decides where lines break. Source
/// lines of a paragraph are joined (so ArgumentParser wraps them once, at the real width);
/// indented lines (lists, tables, examples) and lines after a heading ending in ":" stay as
/// written.
enum Help {
    static func reflow(_ text: String) -> String {
        var out: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let joinable = !line.isEmpty && !line.hasPrefix(" ")
            if joinable, let last = out.last, !last.isEmpty, !last.hasPrefix(" "), !last.hasSuffix(":") {
                out[out.count - 1] = last + " " + line
            } else {
                out.append(line)
            }
        }
        return out.joined(separator: "\n")
    }
}
