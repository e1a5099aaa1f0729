import Foundation

/// `mtasts serve` started by the test; ready when it logs "serving on".
public final class Serve: @unchecked Sendable {
    public let port: Int
    public let dir: URL
    public let logPath: String
    public let process: Spawned

    public init(dir: URL, database: String, extra: String = "") throws {
        self.dir = dir
        port = TestServer.freePort()
        let id = UUID().uuidString.prefix(8)
        let config = dir.appendingPathComponent("serve-\(id).yml").path
        logPath = dir.appendingPathComponent("serve-\(id).log").path
        try "listen: 127.0.0.1:\(port)\ndatabase: \"\(database)\"\n\(extra)\n".write(toFile: config, atomically: true, encoding: .utf8)
        process = try Spawned(CLI.binary.path, ["serve", "--config", config], stderrPath: logPath)
        try process.waitForLog(logPath, contains: "serving on", what: "mtasts serve")
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    public var base: String { "http://127.0.0.1:\(port)" }
    deinit { process.stop() }
}

