import Foundation
import Testing
@testable import TLSRPTReceiver

/// `reports ingest --imap`'s set-up from its options, in-process: the password from a file (line
/// ends trimmed) or the environment, never the URL; the move folder not the one read.
@Suite struct IMAPSetupTests {
    func make(_ url: String, file: String? = nil, env: [String: String] = [:], moveTo: String? = nil) throws(IMAPIngest.SetupError) -> IMAPIngest {
        try IMAPIngest(url: url, passwordFile: file, environment: env, caFiles: [], moveTo: moveTo, flag: "\\Seen", maxSize: 1_000)
    }

    @Test func passwordsAndFolders() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pw-\(UUID().uuidString.prefix(8))").path
        try "s3cret pass\r\n".write(toFile: file, atomically: true, encoding: .utf8)
        let fromFile = try make("imaps://r%40example.test@imap.example.test/TLS", file: file)
        #expect(fromFile.password == "s3cret pass" && fromFile.url.user == "r@example.test" && fromFile.account == "r@example.test@imap.example.test/TLS")
        #expect(fromFile.flag == "\\Seen" && fromFile.moveTo == nil)
        let fromEnv = try make("imap://r@imap.example.test/INBOX", env: ["MTASTS_IMAP_PASSWORD": "env pass"], moveTo: "Done")
        #expect(fromEnv.password == "env pass" && fromEnv.flag == nil && fromEnv.moveTo == "Done")
        func error(_ body: () throws -> IMAPIngest) -> String {
            do { _ = try body(); return "" } catch { return "\(error)" }
        }
        #expect(error { try make("imaps://r@imap.example.test/INBOX") }.contains("MTASTS_IMAP_PASSWORD"))
        #expect(error { try make("imaps://r@imap.example.test/INBOX", file: file + ".missing") }.contains("cannot read"))
        #expect(error { try make("imaps://r:pw@imap.example.test/INBOX", file: file) }.contains("file or an environment variable"))
        #expect(error { try make("imaps://r@imap.example.test/INBOX", file: file, moveTo: "inbox") }.contains("another folder"))
        #expect(error { try make("imaps://r@imap.example.test/Reports", file: file, moveTo: "Reports") }.contains("another folder"))
    }
}
