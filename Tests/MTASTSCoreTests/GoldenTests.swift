import Foundation
import MTASTSCore
import Testing

/// Golden pairs: each interop report (shared/interop/reports) beside its full canonical JSON and
/// the deviations the tolerant reader named, in Vectors/golden/. A change in what we read from a
/// real sender's report shows as a diff here. `MTASTS_WRITE_GOLDEN=1 swift test --filter Golden`
/// rewrites the files (then read the diff before committing it).
@Suite struct GoldenTests {
    static let golden = Paths.vectors.appendingPathComponent("golden")

    static func name(_ file: String) -> String { file.replacingOccurrences(of: "/", with: "__") + ".json" }

    static func rendering(_ result: ReportReader.Result) -> [UInt8] {
        JSONValue.array(result.reports.map { parsed in
            .object([
                JSONMember("report", parsed.report.canonicalJSON),
                JSONMember("diagnostics", .array(parsed.decoded.diagnostics.map { .string("\($0.severity.rawValue) \($0.code): \($0.message)") })),
            ])
        }).serializedBytes(pretty: true) + [0x0A]
    }

    @Test("every interop report matches its golden canonical JSON (CONFORMANCE 8460 #8, #9, #10, #19)") func goldenPairs() throws {
        let root = Paths.interopReports
        let files = try #require(FileManager.default.subpaths(atPath: root.path), "no interop data at \(root.path)").filter {
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: root.appendingPathComponent($0).path, isDirectory: &isDir) && !isDir.boolValue
        }.sorted()
        let write = ProcessInfo.processInfo.environment["MTASTS_WRITE_GOLDEN"] == "1"
        if write { try FileManager.default.createDirectory(at: Self.golden, withIntermediateDirectories: true) }
        var compared = 0
        for file in files {
            guard let result = try? ReportReader.read([UInt8](try Data(contentsOf: root.appendingPathComponent(file)))) else { continue }
            let rendered = Self.rendering(result)
            let path = Self.golden.appendingPathComponent(Self.name(file))
            if write {
                try Data(rendered).write(to: path)
                continue
            }
            guard let want = FileManager.default.contents(atPath: path.path) else {
                Issue.record("no golden file for \(file): \(path.path)")
                continue
            }
            #expect([UInt8](want) == rendered, "\(file) differs from \(Self.name(file))")
            compared += 1
        }
        if !write { #expect(compared >= 50, "only \(compared) golden pairs compared") }
    }
}

/// `JSONWriter` writes what `JSONValue.serializedBytes` writes for the same values: checked by
/// walking every golden file's tree (and a few edge cases) through the writer.
@Suite struct JSONWriterTests {
    static func walk(_ v: JSONValue, _ w: inout JSONWriter) {
        switch v {
        case .object(let members):
            w.beginObject()
            for m in members {
                w.key(m.key)
                walk(m.value, &w)
            }
            w.endObject()
        case .array(let items):
            w.beginArray()
            for item in items { walk(item, &w) }
            w.endArray()
        case .string(let s): w.string(s)
        case .int(let n): w.int(n)
        case .bool(let b): w.bool(b)
        default: w.value(v)
        }
    }

    @Test("the writer's bytes equal the serializer's, pretty or not, from any indent")
    func sameBytes() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: GoldenTests.golden.path).filter { $0.hasSuffix(".json") }
        #expect(files.count >= 50)
        var trees = try files.map { try JSONParser.parse([UInt8](Data(contentsOf: GoldenTests.golden.appendingPathComponent($0)))).value }
        trees += [.object([]), .array([]), .object([JSONMember("a", .array([])), JSONMember("b", .object([])), JSONMember("c", .null)]),
                  .array([.array([.array([])]), .string("x\n\"\u{2028}"), .int(-7), .double(1.5), .bool(false)])]
        for tree in trees {
            for pretty in [false, true] {
                for indent in [0, 1, 3] {
                    var w = JSONWriter(pretty: pretty, indent: indent)
                    Self.walk(tree, &w)
                    #expect(w.bytes == tree.serializedBytes(pretty: pretty, indent: indent))
                }
            }
        }
    }
}
