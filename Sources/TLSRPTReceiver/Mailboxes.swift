import Foundation
import MTASTSCore
import ServerSupport

/// Report mail from a Maildir or an mbox, one message at a time, streamed: a mailbox is never read
/// whole. `take` gets each message and answers whether it is done with (then a Maildir message is
/// marked seen, and the mbox offset is kept past it); `skipped` hears of messages left alone
/// (unreadable, over `maxSize`); `warn` of anything else worth a log line.
public enum Mailbox {
    public typealias Take = (_ bytes: [UInt8], _ name: String) async throws -> Bool
    public typealias Skipped = (_ name: String, _ reason: String) -> Void

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        /// The database failed: try again later (exit 75 for a mail pipe).
        public var temporary: Bool
    }

    /// Maildir: new/ (all) and cur/ (not yet seen); each taken message is marked seen (`:2,S`).
    public static func maildir(_ dir: String, maxSize: Int, take: Take, skipped: Skipped, warn: (String) -> Void) async throws {
        let fm = FileManager.default
        guard fm.fileExists(atPath: dir + "/new") || fm.fileExists(atPath: dir + "/cur") else {
            throw Failure(description: "\(dir) is not a Maildir (no new/ or cur/)", temporary: false)
        }
        try? fm.createDirectory(atPath: dir + "/cur", withIntermediateDirectories: true)
        for sub in ["new", "cur"] {
            let names = ((try? fm.contentsOfDirectory(atPath: "\(dir)/\(sub)")) ?? []).filter { !$0.hasPrefix(".") }.sorted()
            for name in names {
                let info = name.range(of: ":2,").map { String(name[$0.upperBound...]) }
                if sub == "cur", info?.contains("S") == true { continue }
                let path = "\(dir)/\(sub)/\(name)"
                guard let bytes = try? InputFiles.read(path, maxSize: maxSize) else {
                    skipped(path, "unreadable or larger than \(maxSize) bytes; left in place")
                    continue
                }
                guard try await take(bytes, path) else { continue }
                let base = name.range(of: ":2,").map { String(name[..<$0.lowerBound]) } ?? name
                let flags = Set((info ?? "") + "S").sorted()
                let target = "\(dir)/cur/\(base):2,\(String(flags))"
                if rename(path, target) != 0 { warn("\(path): cannot mark as seen: \(String(cString: strerror(errno)))") }
            }
        }
    }

    /// mbox: read as a stream, message by message (split at "From " lines; ">From " unquoted as
    /// in mboxrd); the offset after the last message taken is kept in the database, so a second
    /// run starts there (a new file at the same path, told by its inode, starts at 0).
    public static func mbox(_ path: String, store: ReportStore, maxSize: Int, take: Take, skipped: Skipped) async throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(description: "\(path): cannot open (\(String(cString: strerror(errno))))", temporary: false) }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        let inode = Int64(st.st_ino)
        var start: Int64 = 0
        do {
            if let saved = try store.mboxProgress(path: path), saved.inode == inode, saved.offset <= Int64(st.st_size) { start = saved.offset }
        } catch {
            throw Failure(description: "\(error)", temporary: true)
        }
        lseek(fd, off_t(start), SEEK_SET)
        func record(_ offset: Int64) throws {
            do { try store.setMboxProgress(path: path, inode: inode, offset: offset) } catch {
                throw Failure(description: "\(error)", temporary: true)
            }
        }
        var reader = LineReader(fd: fd, offset: start)
        var message: [UInt8] = []
        var oversized = false
        var messageStart = start
        var index = 0
        func finish(at end: Int64) async throws {
            defer { message.removeAll(keepingCapacity: true); oversized = false }
            guard messageStart < end else { return }
            index += 1
            if oversized {
                skipped("\(path) message \(index)", "larger than \(maxSize) bytes; skipped")
            } else if !message.isEmpty {
                _ = try await take(message, "\(path) message \(index)")
            }
            try record(end)
        }
        let from = Array("From ".utf8)
        while let (line, lineStart) = reader.next() {
            if line.starts(with: from) {
                try await finish(at: lineStart)
                messageStart = lineStart
                continue  // the separator line is not part of the message
            }
            guard !oversized else { continue }
            var content = line[...]
            // mboxrd: ">From ", ">>From " … lose one '>'.
            if content.first == UInt8(ascii: ">"), let firstNon = content.firstIndex(where: { $0 != UInt8(ascii: ">") }),
               content[firstNon...].starts(with: from) {
                content = content.dropFirst()
            }
            if message.count + content.count > maxSize {
                oversized = true
                message.removeAll()
                continue
            }
            message += content
        }
        try await finish(at: reader.offset)
    }
}

extension Mailbox.Failure: MTASTSErrorConvertible {
    public var mtastsError: MTASTSError { MTASTSError(temporary ? .storage : .usage, description, temporary: temporary) }
}
