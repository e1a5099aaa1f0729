import ArgumentParser
import Foundation
import MTASTSCore

struct RecordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Lint _mta-sts and _smtp._tls TXT records.",
        subcommands: [RecordLint.self])
}

struct RecordLint: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lint",
        abstract: "Check one TXT record (RFC 8461 §3.1 or RFC 8460 §3).",
        discussion: Help.reflow("""
            TEXT is the record; several TEXT arguments are the character-strings of one record and
            are joined with nothing in between, as DNS resolvers join them. The kind (sts or tlsrpt)
            is detected from the version tag. Exit 0 when valid (warnings allowed), 1 when not.
            """))

    @Argument(help: "The record text (or its strings, in order).")
    var text: [String]

    @OptionGroup var output: JSONFlag

    func validate() throws {
        if text.isEmpty { throw ValidationError("give the record text") }
    }

    func run() throws {
        let record = TXTRecordSet.join(text)
        let kind: String
        var members: [JSONMember] = []
        var diagnostics: [Diagnostic]
        var summary: String
        if record.hasPrefix("v=TLSRPT") || record.lowercased().trimmingCharacters(in: .whitespaces).hasPrefix("v=tlsrpt") {
            kind = "tlsrpt"
            let result = TLSRPTRecord.parse(record)
            diagnostics = result.diagnostics
            let uris = result.record?.rua.map(\.uri) ?? []
            members.append(JSONMember("rua", .array(uris.map { .string($0) })))
            summary = "TLS-RPT record, reports to \(uris.joined(separator: ", "))"
        } else {
            kind = record.lowercased().trimmingCharacters(in: .whitespaces).hasPrefix("v=sts") ? "sts" : "unknown"
            let result = STSRecord.parse(record)
            diagnostics = result.diagnostics
            if kind == "unknown" {
                diagnostics = [Diagnostic(.error, "unknown-record", "the record begins with neither 'v=STSv1' (MTA-STS) nor 'v=TLSRPTv1' (TLS-RPT)")]
            }
            members.append(JSONMember("id", result.record.map { .string($0.id) } ?? .null))
            summary = "MTA-STS record, id \(result.record?.id ?? "?")"
        }
        let valid = diagnostics.errors.isEmpty
        if output.json {
            let doc = JSONValue.object([JSONMember("valid", .bool(valid)), JSONMember("kind", .string(kind))] + members + [
                JSONMember("errors", diagnostics.errorsJSON),
                JSONMember("warnings", diagnostics.warningsJSON),
            ])
            Console.out(doc.serialized(pretty: true))
        } else {
            Console.out(valid ? "\(Console.green("valid")) \(summary)" : "\(Console.red("invalid")) \(kind == "unknown" ? "record" : kind == "sts" ? "MTA-STS record (senders see no policy)" : "TLS-RPT record (senders send no reports)")")
            for d in diagnostics { Console.out(Console.line(for: d)) }
        }
        if !valid { throw ExitCode(Exit.problems) }
    }
}
