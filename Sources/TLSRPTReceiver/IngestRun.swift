import Foundation
import MTASTSCore
import ServerSupport

/// One `mtasts reports ingest` run: messages from standard input, files, a Maildir or an mbox go
/// through the ingestor one at a time and are counted. A message that is not a report, or is
/// refused, is logged and (with `keepRejected`) kept as a file readable by its owner only; it is
/// done with, not retried. A temporary failure (database, DNS) stops the run with a temporary
/// `MTASTSError` before the message is marked done, so the MTA or the next run retries it.
public final class IngestRun: @unchecked Sendable {  // one task at a time: the run that owns it
    public struct Tally: Sendable {
        public var messages = 0, stored = 0, duplicates = 0, notReports = 0, refused = 0, tooLarge = 0
        public var json: JSONValue {
            .object([JSONMember("messages", .int(Int64(messages))), JSONMember("stored", .int(Int64(stored))),
                     JSONMember("duplicates", .int(Int64(duplicates))), JSONMember("not-reports", .int(Int64(notReports))),
                     JSONMember("refused", .int(Int64(refused))), JSONMember("too-large", .int(Int64(tooLarge)))])
        }
        public var text: String {
            "\(messages) message(s): \(stored) report(s) stored, \(duplicates) already stored, \(notReports) not reports, \(refused) refused, \(tooLarge) unreadable or too large"
        }
    }

    public let ingestor: ReportIngestor
    /// Directory where rejected messages are kept (files 0600), or nil.
    public let keepRejected: String?
    /// Log a line for each stored message too, not only for problems.
    public let logStored: Bool
    let log: (String) -> Void
    public private(set) var tally = Tally()

    public init(ingestor: ReportIngestor, keepRejected: String?, logStored: Bool, log: @escaping (String) -> Void) {
        self.ingestor = ingestor
        self.keepRejected = keepRejected
        self.logStored = logStored
        self.log = log
    }

    /// One message; true when it is done with (stored, already stored, not a report, refused).
    @discardableResult
    public func message(_ bytes: [UInt8], name: String) async throws -> Bool {
        tally.messages += 1
        let outcome: ReportIngestor.Outcome
        do { outcome = try await ingestor.ingest(mail: bytes) } catch let error as DKIMTemporaryFailure {
            throw MTASTSError(.dns, "\(name): \(error) (temporary: try again)", temporary: true)
        } catch {
            throw MTASTSError(.storage, "\(name): \(error) (temporary: try again)", temporary: true)
        }
        if let reason = outcome.notAReport {
            tally.notReports += 1
            log("\(name): not a TLS report: \(reason)")
            keep(bytes)
        } else if let reason = outcome.refused {
            tally.refused += 1
            log("\(name): refused: \(reason)")
            keep(bytes)
        } else {
            tally.stored += outcome.stored.count
            tally.duplicates += outcome.duplicates.count
            if logStored {
                let what = outcome.stored.isEmpty ? "already stored (#\(outcome.duplicates.map(String.init).joined(separator: ", #")))" : "stored as #\(outcome.stored.map(String.init).joined(separator: ", #"))"
                log("\(name): \(outcome.organizations.first ?? "report") \(what); DKIM \(outcome.dkim?.description ?? "not checked")")
            }
        }
        return true
    }

    func skipped(_ name: String, _ reason: String) {
        log("\(name): \(reason)")
        tally.messages += 1
        tally.tooLarge += 1
    }

    /// Every message of a Maildir (new/, unseen cur/), each marked seen once done.
    public func maildir(_ dir: String, maxSize: Int) async throws {
        try await mailbox { try await Mailbox.maildir(dir, maxSize: maxSize, take: self.message, skipped: self.skipped, warn: self.log) }
    }

    /// An mbox, from where the last run stopped.
    public func mbox(_ path: String, maxSize: Int) async throws {
        try await mailbox { try await Mailbox.mbox(path, store: self.ingestor.store, maxSize: maxSize, take: self.message, skipped: self.skipped) }
    }

    private func mailbox(_ body: () async throws -> Void) async throws {
        do { try await body() } catch let failure as Mailbox.Failure {
            throw MTASTSError(failure.temporary ? .storage : .usage, failure.description, temporary: failure.temporary)
        }
    }

    /// Message files ('-': standard input; directories are walked), each read against `maxSize`.
    public func files(_ paths: [String], maxSize: Int) async throws {
        for path in InputFiles.expand(paths) {
            let bytes: [UInt8]
            do { bytes = try InputFiles.read(path, maxSize: maxSize) } catch {
                skipped(path == "-" ? "standard input" : path, "\(error)")
                continue
            }
            try await message(bytes, name: path == "-" ? "standard input" : path)
        }
    }

    /// Keeps a rejected message for the postmaster: a new file, owner-readable only, never
    /// following a link planted in the directory.
    func keep(_ bytes: [UInt8]) {
        guard let directory = keepRejected else { return }
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let file = "\(directory)/\(Int(Date().timeIntervalSince1970)).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).eml"
        let fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { log("\(file): cannot keep the rejected message (\(String(cString: strerror(errno))))"); return }
        var written = 0
        bytes.withUnsafeBytes { raw in
            while written < raw.count {
                let n = write(fd, raw.baseAddress! + written, raw.count - written)
                if n <= 0 { if errno == EINTR { continue }; return }
                written += n
            }
        }
        close(fd)
        if written < bytes.count {
            log("\(file): cannot keep the rejected message (\(String(cString: strerror(errno)))); removed")
            unlink(file)
        }
    }
}
