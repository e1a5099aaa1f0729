import Foundation
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
}

/// Writing to stdout (results) and stderr (logs), with colour only on a terminal without NO_COLOR.
struct Console {
    static let colour: Bool = isatty(1) != 0 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil

    static func out(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    static func err(_ text: String) {
        FileHandle.standardError.write(Data(("mtasts: " + text + "\n").utf8))
    }

    static func paint(_ text: String, _ code: String) -> String { colour ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
    static func red(_ t: String) -> String { paint(t, "31") }
    static func green(_ t: String) -> String { paint(t, "32") }
    static func yellow(_ t: String) -> String { paint(t, "33") }
    static func bold(_ t: String) -> String { paint(t, "1") }
    static func dim(_ t: String) -> String { paint(t, "2") }

    static func line(for d: Diagnostic, indent: String = "  ") -> String {
        let label: String
        switch d.severity {
        case .error: label = red("error")
        case .warning: label = yellow("warning")
        case .info: label = dim("note")
        }
        return indent + (d.line.map { "line \($0): " } ?? "") + "\(label): \(d.message) " + dim("[\(d.code)]")
    }
}

extension Diagnostic {
    var json: JSONValue {
        var m: [JSONMember] = []
        if let line { m.append(JSONMember("line", .int(Int64(line)))) }
        m.append(JSONMember("code", .string(code)))
        m.append(JSONMember("severity", .string(severity.rawValue)))
        m.append(JSONMember("message", .string(message)))
        return .object(m)
    }
}

extension Array where Element == Diagnostic {
    var errorsJSON: JSONValue { .array(errors.map(\.json)) }
    var warningsJSON: JSONValue { .array(warnings.map(\.json)) }
}

/// Input files: a path, `-` for standard input; directories are walked (sorted, recursive).
enum InputFiles {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func read(_ path: String, maxSize: Int) throws -> [UInt8] {
        if path == "-" {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            guard data.count <= maxSize else { throw Failure(description: "standard input is larger than \(maxSize) bytes") }
            return [UInt8](data)
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let why = errno == ENOENT ? "no such file" : String(cString: strerror(errno))
            throw Failure(description: "\(path): cannot open (\(why))")
        }
        defer { close(fd) }
        var st = stat()
        let hint = fstat(fd, &st) == 0 && st.st_size > 0 ? Int(st.st_size) : 65_536
        var bytes = [UInt8](repeating: 0, count: min(hint, maxSize) + 1)
        var count = 0
        while true {
            if count == bytes.count {
                guard bytes.count <= maxSize else { break }
                bytes += [UInt8](repeating: 0, count: min(bytes.count, maxSize + 1 - bytes.count))
            }
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "\(path): cannot read (\(String(cString: strerror(errno))))")
            }
            if n == 0 { break }
            count += n
        }
        guard count <= maxSize else { throw Failure(description: "\(path): larger than \(maxSize) bytes") }
        bytes.removeSubrange(count...)
        return bytes
    }

    static func expand(_ paths: [String]) -> [String] {
        var out: [String] = []
        for path in paths {
            var st = stat()
            if path != "-", stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
                walk(path, into: &out)
            } else {
                out.append(path)
            }
        }
        return out
    }

    /// Regular files below a directory, sorted by name at each level (readdir, no Foundation).
    private static func walk(_ dir: String, into out: inout [String]) {
        guard let handle = opendir(dir) else { return }
        var entries: [(name: String, isDir: Bool)] = []
        while let entry = readdir(handle) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            var isDir = entry.pointee.d_type == DT_DIR
            if entry.pointee.d_type == DT_UNKNOWN || entry.pointee.d_type == DT_LNK {
                var st = stat()
                isDir = stat(dir + "/" + name, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
            }
            entries.append((name, isDir))
        }
        closedir(handle)
        let base = dir.hasSuffix("/") ? dir : dir + "/"
        for entry in entries.sorted(by: { $0.name < $1.name }) {
            if entry.isDir { walk(base + entry.name, into: &out) } else { out.append(base + entry.name) }
        }
    }
}

/// `--log-level` for the long-running commands (serve, daemon); MTASTS_LOG_LEVEL when not given.
struct LoggingOptions: ParsableArguments {
    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical (default: info, or MTASTS_LOG_LEVEL).", valueName: "LEVEL"))
    var logLevel: String?

    func validate() throws {
        if let logLevel, Log.level(logLevel) == nil { throw ValidationError("--log-level must be trace, debug, info, notice, warning, error or critical, not '\(logLevel)'") }
    }

    func bootstrap() {
        let text = logLevel ?? ProcessInfo.processInfo.environment["MTASTS_LOG_LEVEL"] ?? "info"
        Log.bootstrap(level: Log.level(text) ?? .info)
    }
}
