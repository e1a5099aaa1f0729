import Foundation
import MTASTSCore

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
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw Failure(description: "\(path): cannot open (\(FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file"))")
        }
        defer { try? handle.close() }
        let data = try handle.read(upToCount: maxSize + 1) ?? Data()
        guard data.count <= maxSize else { throw Failure(description: "\(path): larger than \(maxSize) bytes") }
        return [UInt8](data)
    }

    static func expand(_ paths: [String]) -> [String] {
        var out: [String] = []
        let fm = FileManager.default
        for path in paths {
            var isDir: ObjCBool = false
            if path != "-", fm.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
                let files = (fm.enumerator(atPath: path)?.allObjects as? [String] ?? []).sorted()
                for f in files {
                    let full = (path as NSString).appendingPathComponent(f)
                    var sub: ObjCBool = false
                    if fm.fileExists(atPath: full, isDirectory: &sub), !sub.boolValue { out.append(full) }
                }
            } else {
                out.append(path)
            }
        }
        return out
    }
}
