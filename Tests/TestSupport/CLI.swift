import Foundation

/// Runs the real `mtasts` binary, built beside the test bundle.
public enum CLI {
    public static var binary: URL {
        if let env = ProcessInfo.processInfo.environment["MTASTS_BIN"] { return URL(fileURLWithPath: env) }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return exe.deletingLastPathComponent().appendingPathComponent("mtasts")
    }

    public static let interop: URL = {
        if let env = ProcessInfo.processInfo.environment["MTASTS_INTEROP"] { return URL(fileURLWithPath: env) }
        // <project>/Tests/TestSupport/CLI.swift → <project>/../shared/interop
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/interop")
    }()

    public struct Output {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        public var json: Any? { try? JSONSerialization.jsonObject(with: Data(stdout.utf8), options: [.fragmentsAllowed]) }
    }

    public static func run(_ arguments: [String], stdin: Data? = nil, environment: [String: String] = [:], executable: URL? = nil) throws -> Output {
        let process = Process()
        process.executableURL = executable ?? binary
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        // Output goes to files, so that a large output can never block the process on a pipe.
        let dir = FileManager.default.temporaryDirectory
        let outURL = dir.appendingPathComponent("mtasts-out-\(UUID().uuidString)")
        let errURL = dir.appendingPathComponent("mtasts-err-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        let input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(stdin) }
        try input.fileHandleForWriting.close()
        process.waitUntilExit()
        try out.close()
        try err.close()
        let outData = try Data(contentsOf: outURL), errData = try Data(contentsOf: errURL)
        if process.terminationReason == .uncaughtSignal {
            // A crash: its whole backtrace goes to the test log, whatever the test prints of it.
            FileHandle.standardError.write(Data("mtasts \(arguments.prefix(2).joined(separator: " ")) died of signal \(process.terminationStatus):\n".utf8) + errData)
        }
        return Output(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
    }
}
