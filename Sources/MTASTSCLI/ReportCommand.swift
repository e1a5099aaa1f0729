import ArgumentParser
import Foundation
import ServerSupport
import MTASTSCore

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Read TLS reports (RFC 8460).",
        subcommands: [ReportParse.self])
}

struct ReportParse: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parse",
        abstract: "Parse TLS report files: .json, .json.gz or email messages.",
        discussion: Help.reflow("""
            Each FILE may be report JSON, gzip-compressed JSON, or a report email (multipart/report;
            report-type=tlsrpt, as received from the rua mailto: address); '-' reads standard input,
            a directory is read recursively. Prints each report normalised, with what was tolerated,
            or why the file is not a report. With --json: an array with one object per file, each
            report in canonical RFC 8460 form. Exit 1 if any file is not a report.
            """))

    @Argument(help: "Report files, directories, or '-' for standard input.")
    var files: [String] = ["-"]

    @Option(name: .customLong("max-size"), help: "Largest report accepted, in bytes, compressed or not.")
    var maxSize: Int = ReportReader.defaultMaxSize

    @Flag(help: "Print nothing; only the exit code and errors on standard error.")
    var quiet = false

    @OptionGroup var output: JSONFlag

    @Option(help: "Files parsed in parallel (default: the number of CPUs).")
    var jobs: Int = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        if jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        if maxSize < 1 { throw ValidationError("--max-size must be positive") }
    }

    /// One file's outcome: the bytes to print (JSON element or text) and whether it failed.
    struct Outcome {
        var output: [UInt8] = []
        var failed = false
        var log: String?
    }

    /// What `process` needs, read once from the parsed options (a property wrapper read per file
    /// showed in the profile).
    struct Job {
        let maxSize: Int
        let json: Bool
        let quiet: Bool
    }

    static func process(_ path: String, _ job: Job) -> Outcome {
        var outcome = Outcome()
        let result: ReportReader.Result
        do {
            let bytes = try InputFiles.read(path, maxSize: job.maxSize * 2)
            result = try ReportReader.read(bytes, maxSize: job.maxSize)
        } catch let error as NotAReport {
            outcome.failed = true
            if job.json {
                outcome.output = JSONValue.object([JSONMember("file", .string(path)), JSONMember("ok", .bool(false)), JSONMember("error", .string("not a TLS report: \(error.reason)"))]).serializedBytes(pretty: true, indent: 1)
            } else if !job.quiet {
                outcome.output = Array("\(path): \(Console.red("not a TLS report")): \(error.reason)\n".utf8)
            }
            return outcome
        } catch {
            outcome.failed = true
            outcome.log = "\(error)"
            if job.json {
                outcome.output = JSONValue.object([JSONMember("file", .string(path)), JSONMember("ok", .bool(false)), JSONMember("error", .string("\(error)"))]).serializedBytes(pretty: true, indent: 1)
            }
            return outcome
        }
        if job.json {
            outcome.output = result.jsonBytes(file: path, indent: 1)
        } else if !job.quiet {
            outcome.output = Array(result.text(file: path, style: Console.style).utf8)
        }
        return outcome
    }

    func run() throws {
        let paths = InputFiles.expand(files)
        var failed = 0
        var buffer: [UInt8] = []
        var first = true
        // Files are parsed in batches across --jobs threads; results are printed in input order
        // as each batch completes, so output is streamed and memory stays bounded.
        let job = Job(maxSize: maxSize, json: output.json, quiet: quiet)
        ParallelBatches.map(paths, jobs: paths.first == "-" ? 1 : jobs, transform: { ReportParse.process($0, job) }) { outcomes in
            for outcome in outcomes {
                if outcome.failed { failed += 1 }
                if let log = outcome.log { Console.err(log) }
                if output.json {
                    buffer.append(contentsOf: first ? [0x5B, 0x0A, 0x20, 0x20] : [0x2C, 0x0A, 0x20, 0x20])  // "[\n  " or ",\n  "
                    first = false
                }
                buffer += outcome.output
            }
            Console.write(buffer)
            buffer.removeAll(keepingCapacity: true)
        }
        if output.json {
            Console.write(Array((first ? "[]\n" : "\n]\n").utf8))
        }
        if failed > 0 { throw ExitCode(Exit.problems) }
    }
}

