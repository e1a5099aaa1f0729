import Foundation
import Testing

/// Where the golden vectors and the shared interop data live. A missing folder fails the test.
enum Paths {
    static let testsDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let vectors = testsDir.appendingPathComponent("Vectors")
    static var interopReports: URL {
        if let env = ProcessInfo.processInfo.environment["MTASTS_INTEROP"] {
            return URL(fileURLWithPath: env).appendingPathComponent("reports")
        }
        // <project>/Tests/MTASTSCoreTests → <project>/../shared/interop
        return testsDir.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("shared/interop/reports")
    }
}

func loadJSON(_ name: String) throws -> Any {
    let data = try Data(contentsOf: Paths.vectors.appendingPathComponent(name))
    return try JSONSerialization.jsonObject(with: data)
}

func loadVectors(_ name: String) throws -> [[String: Any]] {
    let any = try loadJSON(name)
    return try #require(any as? [[String: Any]], "\(name) is not an array of objects")
}
