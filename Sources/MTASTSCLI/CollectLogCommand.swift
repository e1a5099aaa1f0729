import ArgumentParser
import Foundation
import MailDNS
import MTASTSConfig
import MTASTSCore
import PolicyDaemon
import PolicyResolver
import TLSRPTSender

struct CollectLogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collect-log",
        abstract: "Collect TLS results from Postfix's mail log (Postfix 3.9 and older, which have no TLSRPT).",
        discussion: Help.reflow("""
            Reads the log (a file, or '-' for standard input; --follow keeps reading as it grows and
            across rotation), takes each delivery attempt of Postfix's smtp client (to=<…>, relay=…,
            status=…) with the TLS Postfix logged for its connection, and stores it like a libtlsrpt
            datagram: the day is the log line's UTC day, the TLSRPT record is looked up in DNS
            (_smtp._tls.DOMAIN; domains without one are skipped, as Postfix does), and the policy is
            the one the daemon's policy cache holds for the domain (cache: in --config), else
            no-policy-found.

            What counts as a failure under an MTA-STS policy: what Postfix refused ("TLS is required,
            but was not offered" → starttls-not-supported; "Server certificate not verified" →
            certificate-expired, certificate-host-mismatch (the chain was trusted),
            certificate-not-trusted or validation-failure); and, in testing mode, a delivery in clear
            (starttls-not-supported), over an untrusted or anonymous connection, or to an MX outside
            the policy's mx patterns (validation-failure). A connection Postfix reused from its
            connection cache logs no TLS line and is counted as in clear: turn
            smtp_connection_cache_on_demand off for exact figures.

            Exit codes: 0 read to the end; 2 usage error; 3 the database failed.
            """))

    @Argument(help: "The mail log ('-': standard input).") var log: String = "-"
    @Flag(help: "Keep reading as the file grows (and after it is rotated).") var follow = false
    @Option(help: ArgumentHelp("Year of syslog time stamps that have none (default: this year).", valueName: "YEAR")) var year: Int?
    @Option(name: .customLong("dns-server"), help: ArgumentHelp("DNS server for _smtp._tls look-ups (default: dns_server of --config).", valueName: "ADDRESS")) var dnsServer: String?
    @OptionGroup var sender: SenderOptions
    @OptionGroup var output: JSONFlag

    func run() async throws {
        let config = try sender.daemonConfig()
        let store = try sender.store(config)
        let policies: (any PolicyStore)?
        do { policies = try DaemonRuntime.makeStore(config) } catch {
            Console.err("\(error)")
            throw ExitCode(Exit.temporary)
        }
        let dns: DNSResolver
        do { dns = try DNSResolver(.init(server: dnsServer ?? config.dnsServer, timeout: config.dnsTimeout, tries: 2)) } catch {
            throw ValidationError("--dns-server: \(error)")
        }
        let currentYear = Int(RFC3339.format(Int64(Date().timeIntervalSince1970)).prefix(4)) ?? 2026
        var reader = PostfixLogReader(defaultYear: year ?? currentYear, utcOffset: Int64(TimeZone.current.secondsFromGMT()))
        var records: [String: String?] = [:]
        var batch = SessionBatch()
        var counts = (lines: 0, attempts: 0, stored: 0, noRecord: 0)
        var lastCommit = Date()

        func commit() throws {
            guard !batch.isEmpty else { return }
            do { try store.commit(batch) } catch {
                Console.err("\(error)")
                throw ExitCode(Exit.temporary)
            }
            counts.stored += batch.datagrams
            batch = SessionBatch()
            lastCommit = Date()
        }

        func take(_ line: String) async throws {
            counts.lines += 1
            guard let outcome = reader.read(line) else { return }
            counts.attempts += 1
            if records[outcome.domain] == nil {
                var found: String?
                if let answer = try? await dns.txt("_smtp._tls." + outcome.domain) {
                    let texts = answer.records.map { String(decoding: $0.joined(), as: UTF8.self) }
                    let chosen = texts.filter { $0.hasPrefix("v=TLSRPTv1") }
                    if chosen.count == 1 { found = chosen[0] }
                }
                records[outcome.domain] = .some(found)
            }
            guard let record = records[outcome.domain] ?? nil else {
                counts.noRecord += 1
                return
            }
            let policy = (try? policies?.load(outcome.domain))??.policy
            let datagram = Self.datagram(outcome, record: record, policy: policy)
            let time = outcome.time ?? Int64(Date().timeIntervalSince1970)
            batch.add(datagram, day: RFC3339.formatDay(time))
            if batch.datagrams >= 1_000 || Date().timeIntervalSince(lastCommit) >= 1 { try commit() }
        }

        if log == "-" {
            while let line = readLine(strippingNewline: true) { try await take(line) }
        } else {
            var tail = try LogTail(path: log)
            while true {
                while let line = tail.next() { try await take(line) }
                try commit()
                guard follow else { break }
                try await Task.sleep(for: .milliseconds(500))
                tail.reopenIfRotated()
            }
        }
        try commit()
        if output.json {
            Console.out(String(decoding: JSONValue.object([
                JSONMember("lines", .int(Int64(counts.lines))), JSONMember("delivery-attempts", .int(Int64(counts.attempts))),
                JSONMember("stored", .int(Int64(counts.stored))), JSONMember("no-tlsrpt-record", .int(Int64(counts.noRecord))),
            ]).serializedBytes(pretty: true), as: UTF8.self))
        } else {
            Console.out("\(counts.lines) lines, \(counts.attempts) delivery attempts: \(counts.stored) stored, \(counts.noRecord) to domains without a TLSRPT record")
        }
    }

    /// One delivery attempt as a libtlsrpt datagram would have said it.
    static func datagram(_ o: PostfixLogOutcome, record: String, policy: STSPolicy?) -> TLSRPTDatagram {
        guard let policy, policy.mode != .none else {
            return TLSRPTDatagram(protocolVersion: nil, domain: o.domain, record: record,
                                  policies: [.init(type: .noPolicyFound, domain: o.domain, strings: [], mxHosts: [], failures: [], failed: false)],
                                  repairedUTF8: false)
        }
        var failure = o.failure
        let matches = policy.mx.contains { MXPattern.matches(host: o.mxHost, pattern: $0.text) }
        if failure == nil {
            switch o.tls {
            case .verified: break
            case .trusted: if !matches { failure = .validationFailure }
            case .untrusted: failure = .certificateNotTrusted
            case .anonymous: failure = .validationFailure
            case .none: failure = .starttlsNotSupported
            }
            if failure == nil && !matches { failure = .validationFailure }
        }
        var details: [FailureDetail] = []
        if let failure {
            details.append(FailureDetail(resultType: failure, receivingMXHostname: o.mxHost, receivingIP: o.mxAddress, failedSessionCount: 1,
                                         additionalInformation: o.detail.map { String($0.prefix(200)) } ?? (matches ? nil : "MX \(o.mxHost) is not in the policy")))
        }
        return TLSRPTDatagram(protocolVersion: nil, domain: o.domain, record: record,
                              policies: [.init(type: .sts, domain: o.domain, strings: policy.lines, mxHosts: policy.mx.map(\.text),
                                               failures: details, failed: failure != nil)],
                              repairedUTF8: false)
    }
}

/// Lines of a growing log file; notices rotation (a new file under the name).
struct LogTail {
    let path: String
    var handle: FileHandle
    var inode: UInt64
    var pending: [UInt8] = []

    init(path: String) throws {
        self.path = path
        guard let h = FileHandle(forReadingAtPath: path) else { throw ValidationError("\(path): cannot open") }
        handle = h
        inode = Self.inode(path)
    }

    static func inode(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_ino) : 0
    }

    mutating func next() -> String? {
        while true {
            if let nl = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                return line
            }
            let data = handle.readData(ofLength: 1 << 20)
            if data.isEmpty { return nil }
            pending += data
            if pending.count > 1 << 20 && !pending.contains(0x0A) { pending.removeAll() }  // no line is this long
        }
    }

    mutating func reopenIfRotated() {
        let now = Self.inode(path)
        guard now != 0, now != inode, let h = FileHandle(forReadingAtPath: path) else { return }
        // The old file was read to its end just before this call.
        try? handle.close()
        handle = h
        inode = now
    }
}
