import DKIM
import Foundation
import MTASTSCore
import Testing
import TestSupport
@testable import TLSRPTReceiver

/// The mailbox readers in-process, on the real report mails of the interop corpus (Google,
/// Microsoft, Mail.ru, ...): DKIM is not the question here (`ignore`); it is in ReceiverTests.
@Suite struct MailboxTests {
    let dir: URL
    let mails: [URL]

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("mailbox-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let root = CLI.interop.appendingPathComponent("reports")
        mails = ["tlsrpt-rs/google1.eml", "tlsrpt-rs/microsoft1.eml", "tlsrpt-rs/mail.ru.eml", "mox/example.eml"].map { root.appendingPathComponent($0) }
        for mail in mails { #expect(FileManager.default.fileExists(atPath: mail.path), "interop mail \(mail.path) missing") }
    }

    func ingestor() throws -> ReportIngestor {
        ReportIngestor(store: try ReportStore(url: dir.appendingPathComponent("reports.db").path), dkimPolicy: .ignore, lookup: { _ in nil })
    }

    @Test("Maildir: new/ and unseen cur/ are taken and marked seen; a second run takes nothing (CONFORMANCE 8460 #14, #19)") func maildir() async throws {
        let box = dir.appendingPathComponent("Maildir")
        for sub in ["new", "cur", "tmp"] { try FileManager.default.createDirectory(at: box.appendingPathComponent(sub), withIntermediateDirectories: true) }
        for (i, mail) in mails.enumerated() {
            try FileManager.default.copyItem(at: mail, to: box.appendingPathComponent(i < 3 ? "new/\(i).host" : "cur/\(i).host:2,"))
        }
        try "Subject: seen already\r\n\r\nhello\r\n".write(to: box.appendingPathComponent("cur/9.host:2,S"), atomically: true, encoding: .utf8)
        try Data(repeating: 0x41, count: 300_000).write(to: box.appendingPathComponent("new/big.host"))
        let ingestor = try ingestor()
        var taken: [String] = [], skipped: [String] = [], stored = 0
        try await Mailbox.maildir(box.path, maxSize: 200_000, take: { bytes, name in
            taken.append(name)
            stored += try await ingestor.ingest(mail: bytes).stored.count
            return true
        }, skipped: { name, _ in skipped.append(name) }, warn: { Issue.record("\($0)") })
        #expect(taken.count == 4)
        #expect(stored == 4)
        #expect(skipped.map { ($0 as NSString).lastPathComponent } == ["big.host"])
        let cur = try FileManager.default.contentsOfDirectory(atPath: box.appendingPathComponent("cur").path).sorted()
        #expect(cur == ["0.host:2,S", "1.host:2,S", "2.host:2,S", "3.host:2,S", "9.host:2,S"])
        var again = 0
        try await Mailbox.maildir(box.path, maxSize: 200_000, take: { _, _ in again += 1; return true }, skipped: { _, _ in }, warn: { _ in })
        #expect(again == 0)
        await #expect(throws: Mailbox.Failure.self) {
            try await Mailbox.maildir(dir.path, maxSize: 1, take: { _, _ in true }, skipped: { _, _ in }, warn: { _ in })
        }
    }

    @Test("mbox: streamed message by message, >From unquoted, the offset kept; appended mail is taken alone") func mbox() async throws {
        let path = dir.appendingPathComponent("reports.mbox").path
        func append(_ mail: URL) throws {
            var text = try String(contentsOf: mail, encoding: .utf8).replacingOccurrences(of: "\r\n", with: "\n")
            // mboxrd: a body line starting "From " is written ">From ".
            text = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasPrefix("From ") ? ">" + $0 : String($0) }.joined(separator: "\n")
            let handle = FileHandle(forWritingAtPath: path) ?? { FileManager.default.createFile(atPath: path, contents: nil); return FileHandle(forWritingAtPath: path)! }()
            handle.seekToEndOfFile()
            handle.write(Data("From MAILER-DAEMON Mon Nov 30 00:00:00 2026\n\(text)\n".utf8))
            handle.closeFile()
        }
        for mail in mails.prefix(3) { try append(mail) }
        let ingestor = try ingestor()
        var names: [String] = []
        var stored = 0
        let take: Mailbox.Take = { bytes, name in
            names.append(name)
            stored += try await ingestor.ingest(mail: bytes).stored.count
            return true
        }
        try await Mailbox.mbox(path, store: ingestor.store, maxSize: 1 << 20, take: take, skipped: { n, r in Issue.record("\(n): \(r)") })
        #expect(names.count == 3)
        #expect(stored == 3)
        try await Mailbox.mbox(path, store: ingestor.store, maxSize: 1 << 20, take: take, skipped: { _, _ in })
        #expect(names.count == 3)
        try append(mails[3])
        try await Mailbox.mbox(path, store: ingestor.store, maxSize: 1 << 20, take: take, skipped: { _, _ in })
        #expect(names.count == 4)
        #expect(stored == 4)
        let saved = try #require(try ingestor.store.mboxProgress(path: path))
        #expect(saved.offset == Int64(try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int))
    }
}
