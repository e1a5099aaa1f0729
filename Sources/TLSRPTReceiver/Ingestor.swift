import DKIM
import Foundation
import MTASTSCore
import Storage

/// Takes report bytes from any channel (HTTPS body, a mail message, a file), checks DKIM for
/// mail, stores what is a report. Storage errors are thrown (the caller answers "try again");
/// input that is not a report is an outcome, not an error.
public final class ReportIngestor: Sendable {
    public enum DKIMPolicy: String, Sendable {
        /// Mail whose signature does not verify is refused (not stored): the default (RFC 8460 §3).
        case require
        /// The result is stored with the report.
        case record
        /// No verification.
        case ignore
    }

    public struct Outcome: Sendable {
        public var stored: [Int64] = []
        public var duplicates: [Int64] = []
        /// Why the input is not a report (nil when it is one).
        public var notAReport: String?
        /// The input is too large (compressed or inflated).
        public var tooLarge = false
        /// Why a report was refused (DKIM policy), nil when it was not.
        public var refused: String?
        public var dkim: DKIM.Result?
        public var organizations: [String] = []
    }

    public let store: ReportStore
    public let maxSize: Int
    public let dkimPolicy: DKIMPolicy
    let lookup: DKIM.KeyLookup

    public init(store: ReportStore, maxSize: Int = ReportReader.defaultMaxSize, dkimPolicy: DKIMPolicy = .require, lookup: @escaping DKIM.KeyLookup) {
        self.store = store
        self.maxSize = maxSize
        self.dkimPolicy = dkimPolicy
        self.lookup = lookup
    }

    /// A body POSTed to the report endpoint: JSON or gzip, whatever its label says.
    public func ingest(body: [UInt8], channel: String = "https", at time: Double = Date().timeIntervalSince1970) throws -> Outcome {
        var outcome = Outcome()
        let result: ReportReader.Result
        do { result = try ReportReader.read(body, maxSize: maxSize, allowMail: false) } catch {
            outcome.notAReport = error.reason
            outcome.tooLarge = error.tooLarge
            return outcome
        }
        guard result.mail == nil else {
            outcome.notAReport = "a mail message was posted; post the report (application/tlsrpt+gzip or +json)"
            return outcome
        }
        try save(result, raw: body, channel: channel, at: time, dkim: nil, into: &outcome)
        return outcome
    }

    /// One mail message (from a pipe, a Maildir or an mbox).
    public func ingest(mail bytes: [UInt8], channel: String = "mail", at time: Double = Date().timeIntervalSince1970) async throws -> Outcome {
        var outcome = Outcome()
        let result: ReportReader.Result
        do { result = try ReportReader.read(bytes, maxSize: maxSize) } catch {
            outcome.notAReport = error.reason
            return outcome
        }
        var dkim: DKIM.Result?
        if result.mail != nil && dkimPolicy != .ignore {
            let results = await DKIM.verify(bytes, lookup: lookup)
            // A pass authenticates the report only when its d= aligns with the From domain (the
            // same domain, or one a subdomain of the other): anyone can sign with their own domain.
            let fromDomain = Self.domain(ofAddress: result.mail?.from)
            let aligned = results.first { $0.status == .pass && Self.aligned($0.domain, fromDomain) }
            if let aligned {
                dkim = aligned
            } else if var unaligned = results.first(where: { $0.status == .pass }) {
                unaligned.status = .fail
                unaligned.reason = "d=\(unaligned.domain ?? "?") does not align with the From domain \(fromDomain ?? "(none)")"
                dkim = unaligned
            } else {
                dkim = results.first { $0.status == .temperror } ?? results.first
            }
            outcome.dkim = dkim
            if dkimPolicy == .require, dkim?.status != .pass {
                if dkim?.status == .temperror { throw DKIMTemporaryFailure(reason: dkim!.reason) }
                outcome.refused = "DKIM \(dkim?.description ?? "none") and the policy requires a valid signature"
                return outcome
            }
        }
        try save(result, raw: bytes, channel: result.mail == nil ? "file" : channel, at: time, dkim: dkim, into: &outcome)
        return outcome
    }

    /// The domain of the one mailbox of a From header (`Name <a@b.example>` or `a@b.example`):
    /// comments and quoted strings are skipped first; a From naming several mailboxes, or none,
    /// gives nil (nothing can align with it).
    static func domain(ofAddress header: String?) -> String? {
        guard let header else { return nil }
        var plain = "", depth = 0, quoted = false, escaped = false
        for c in header {
            if escaped { escaped = false; if depth == 0 && !quoted { plain.append(c) }; continue }
            if c == "\\" { escaped = true; continue }
            if quoted { if c == "\"" { quoted = false }; continue }
            if c == "\"" && depth == 0 { quoted = true; continue }
            if c == "(" { depth += 1; continue }
            if c == ")" && depth > 0 { depth -= 1; continue }
            if depth == 0 { plain.append(c) }
        }
        guard !plain.contains(",") else { return nil }
        var address = plain
        if let open = plain.firstIndex(of: "<") {
            guard let close = plain[open...].firstIndex(of: ">"), plain.filter({ $0 == "<" }).count == 1 else { return nil }
            address = String(plain[plain.index(after: open)..<close])
        }
        let parts = address.trimmingCharacters(in: .whitespaces).split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty else { return nil }
        let domain = parts[1].trimmingCharacters(in: .whitespaces).lowercased()
        guard !domain.isEmpty, !domain.contains(where: { $0 == " " || $0 == "<" || $0 == ">" }) else { return nil }
        return domain.hasSuffix(".") ? String(domain.dropLast()) : domain
    }

    /// Relaxed alignment without a public-suffix list: the same domain, or one a subdomain of the
    /// other, where the shorter has at least two labels (never a bare top-level domain).
    static func aligned(_ signer: String?, _ from: String?) -> Bool {
        guard var d = signer?.lowercased(), let f = from else { return false }
        if d.hasSuffix(".") { d.removeLast() }
        if d == f { return true }
        let (short, long) = d.count < f.count ? (d, f) : (f, d)
        return short.contains(".") && long.hasSuffix("." + short)
    }

    private func save(_ result: ReportReader.Result, raw: [UInt8], channel: String, at time: Double, dkim: DKIM.Result?, into outcome: inout Outcome) throws {
        for parsed in result.reports {
            let input = IncomingReport(parsed: parsed, raw: raw, channel: channel, receivedAt: time,
                                       dkim: dkim.map { $0.status.rawValue }, dkimDomain: dkim?.domain, mailFrom: result.mail?.from,
                                       reportDomain: result.mail?.tlsReportDomain)
            switch try store.store(input) {
            case .stored(let id): outcome.stored.append(id)
            case .duplicate(let id): outcome.duplicates.append(id)
            }
            if let org = parsed.report.organizationName { outcome.organizations.append(org) }
        }
    }
}

/// The DKIM key of a message could not be looked up now (DNS time-out or SERVFAIL) and the policy
/// requires a valid signature: the message is to be tried again later, not refused. The sender of
/// the message chooses the DNS that fails, so a mailbox route must not let it hold up the messages
/// behind it (`IMAPIngest` defers it and goes on).
public struct DKIMTemporaryFailure: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { "DKIM key look-up failed temporarily: \(reason)" }
}
