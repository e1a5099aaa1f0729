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

    func process(_ path: String) -> Outcome {
        var outcome = Outcome()
        let result: ReportReader.Result
        do {
            let bytes = try InputFiles.read(path, maxSize: maxSize * 2)
            result = try ReportReader.read(bytes, maxSize: maxSize)
        } catch let error as NotAReport {
            outcome.failed = true
            if output.json {
                outcome.output = JSONValue.object([JSONMember("file", .string(path)), JSONMember("ok", .bool(false)), JSONMember("error", .string("not a TLS report: \(error.reason)"))]).serializedBytes(pretty: true, indent: 1)
            } else if !quiet {
                outcome.output = Array("\(path): \(Console.red("not a TLS report")): \(error.reason)\n".utf8)
            }
            return outcome
        } catch {
            outcome.failed = true
            outcome.log = "\(error)"
            if output.json {
                outcome.output = JSONValue.object([JSONMember("file", .string(path)), JSONMember("ok", .bool(false)), JSONMember("error", .string("\(error)"))]).serializedBytes(pretty: true, indent: 1)
            }
            return outcome
        }
        if output.json {
            outcome.output = json(path: path, result).serializedBytes(pretty: true, indent: 1)
        } else if !quiet {
            outcome.output = Array(human(path: path, result).utf8)
        }
        return outcome
    }

    func run() throws {
        let paths = InputFiles.expand(files)
        var failed = 0
        var buffer: [UInt8] = []
        var first = true
        // Files are parsed in batches, each batch across --jobs threads; results are printed in
        // input order as each batch completes, so output is streamed and memory stays bounded.
        let batchSize = max(64, jobs * 64)
        var batchStart = 0
        while batchStart < paths.count {
            let batch = Array(paths[batchStart..<min(paths.count, batchStart + batchSize)])
            batchStart += batch.count
            var outcomes = [Outcome](repeating: Outcome(), count: batch.count)
            if jobs == 1 || batch.count == 1 || paths.first == "-" {
                for (i, path) in batch.enumerated() { outcomes[i] = process(path) }
            } else {
                let workers = min(jobs, batch.count)
                let command = UncheckedSendable(self)
                outcomes.withUnsafeMutableBufferPointer { slots in
                    // Each worker writes only its own slots (i ≡ worker mod workers).
                    let base = UncheckedSendable(slots.baseAddress!)
                    DispatchQueue.concurrentPerform(iterations: workers) { worker in
                        for i in stride(from: worker, to: batch.count, by: workers) {
                            (base.value + i).pointee = command.value.process(batch[i])
                        }
                    }
                }
            }
            for outcome in outcomes {
                if outcome.failed { failed += 1 }
                if let log = outcome.log { Console.err(log) }
                if output.json {
                    buffer += Array((first ? "[\n  " : ",\n  ").utf8)
                    first = false
                }
                buffer += outcome.output
            }
            FileHandle.standardOutput.write(Data(buffer))
            buffer.removeAll(keepingCapacity: true)
        }
        if output.json {
            FileHandle.standardOutput.write(Data((first ? "[]\n" : "\n]\n").utf8))
        }
        if failed > 0 { throw ExitCode(Exit.problems) }
    }

    func json(path: String, _ result: ReportReader.Result) -> JSONValue {
        var members: [JSONMember] = [
            JSONMember("file", .string(path)),
            JSONMember("ok", .bool(true)),
            JSONMember("source", .string(result.reports.first?.source.rawValue ?? "")),
        ]
        if let mail = result.mail {
            var m: [JSONMember] = []
            func add(_ k: String, _ v: String?) { if let v { m.append(JSONMember(k, .string(v))) } }
            add("from", mail.from)
            add("subject", mail.subject)
            add("message-id", mail.messageID)
            add("tls-report-domain", mail.tlsReportDomain)
            add("tls-report-submitter", mail.tlsReportSubmitter)
            m.append(JSONMember("dkim-signed", .bool(mail.dkimSignature != nil)))
            members.append(JSONMember("mail", .object(m)))
        }
        members.append(JSONMember("reports", .array(result.reports.map { r in
            var rm: [JSONMember] = []
            if let f = r.filename { rm.append(JSONMember("filename", .string(f))) }
            if let t = r.mediaType { rm.append(JSONMember("media-type", .string(t))) }
            rm.append(JSONMember("report", r.report.canonicalJSON))
            rm.append(JSONMember("warnings", .array(r.diagnostics.map(\.json))))
            return .object(rm)
        })))
        members.append(JSONMember("warnings", .array(result.diagnostics.map(\.json))))
        return .object(members)
    }

    func human(path: String, _ result: ReportReader.Result) -> String {
        var out = ""
        for parsed in result.reports {
            let r = parsed.report
            let who = [r.organizationName, r.contactInfo.map { "<\($0)>" }].compactMap { $0 }.joined(separator: " ")
            let domains = Set(r.policies.compactMap(\.policy.domain)).sorted()
            let day = RFC3339.formatDay(r.startDate)
            let span = r.endDate - r.startDate > 86_400 ? "\(day) to \(RFC3339.formatDay(r.endDate))" : day
            out += "\(Console.bold(path)): \(who.isEmpty ? "an unnamed sender" : who) on \(domains.isEmpty ? "(no policy domain)" : domains.joined(separator: ", ")) for \(span)\n"
            let total = r.totalSuccessful + r.totalFailed
            let rate = total == 0 ? "no sessions" : String(format: "%.1f%% ok", 100.0 * Double(r.totalSuccessful) / Double(total))
            out += "  sessions: \(r.totalSuccessful) ok, \(r.totalFailed > 0 ? Console.red("\(r.totalFailed) failed") : "0 failed") (\(rate))\n"
            for p in r.policies {
                let mx = p.policy.mxHosts.isEmpty ? "" : " mx \(p.policy.mxHosts.joined(separator: ","))"
                out += "  policy \(p.policy.type.rawValue) \(p.policy.domain ?? "-")\(mx): \(p.successfulSessions) ok, \(p.failedSessions) failed\n"
                var byType: [String: Int] = [:]
                for f in p.failureDetails { byType[f.resultType.rawValue, default: 0] += f.failedSessionCount }
                for (type, n) in byType.sorted(by: { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }) {
                    out += "    \(Console.red(type)): \(n)\n"
                }
            }
            for d in parsed.diagnostics where d.severity != .info { out += Console.line(for: d) + "\n" }
        }
        for d in result.diagnostics where d.severity != .info { out += Console.line(for: d) + "\n" }
        return out
    }
}

/// Hands a value to worker threads that use it without sharing mutable state.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
