import Foundation
import Testing
import TestSupport

@Suite struct CLITests {
    @Test func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: CLI.binary.path), "no mtasts at \(CLI.binary.path)")
    }

    @Test func policyLintValidJSON() throws {
        let policy = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n"
        let r = try CLI.run(["policy", "lint", "--json"], stdin: Data(policy.utf8))
        #expect(r.status == 0, "\(r.stderr)")
        let doc = try #require(r.json as? [String: Any])
        #expect(doc["valid"] as? Bool == true)
        let p = try #require(doc["policy"] as? [String: Any])
        #expect(p["version"] as? String == "STSv1")
        #expect(p["mode"] as? String == "enforce")
        #expect(p["max_age"] as? Int == 604800)
        #expect(p["mx"] as? [String] == ["mail.example.com", "*.example.net"])
        #expect((doc["errors"] as? [Any])?.isEmpty == true)
    }

    @Test func policyLintInvalidFromFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mtasts-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("mta-sts.txt")
        try Data("version: STSv1\nmode: Enforce\nmx: mail*.example.com\nmax_age: 86400\nmode: none\n".utf8).write(to: file)
        let r = try CLI.run(["policy", "lint", file.path, "--json"])
        #expect(r.status == 1)
        let doc = try #require(r.json as? [String: Any])
        #expect(doc["valid"] as? Bool == false)
        #expect(doc["policy"] is NSNull)
        let errors = try #require(doc["errors"] as? [[String: Any]])
        #expect(errors.map { $0["code"] as? String } == ["bad-mode", "bad-mx"])
        #expect(errors.map { $0["line"] as? Int } == [2, 3])
        let warnings = try #require(doc["warnings"] as? [[String: Any]])
        #expect(warnings.contains { $0["code"] as? String == "duplicate-key" && $0["line"] as? Int == 5 })
        // Human output names the lines too.
        let human = try CLI.run(["policy", "lint", file.path], environment: ["NO_COLOR": "1"])
        #expect(human.status == 1)
        #expect(human.stdout.contains("line 2: error: mode 'Enforce' must be lowercase"))
        #expect(!human.stdout.contains("\u{1B}["))
    }

    @Test func policyLintMissingFile() throws {
        let r = try CLI.run(["policy", "lint", "/nonexistent/mta-sts.txt"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("no such file"))
    }

    @Test("a rua mailto that smuggles CR/LF (percent-encoded) is an error, exit 1 (hostile input)") func recordLintCRLF() throws {
        let r = try CLI.run(["record", "lint", "--json", "v=TLSRPTv1; rua=mailto:x%3E%0D%0ADATA%0D%0A...@victim.example"])
        #expect(r.status == 1, "\(r.stdout)")
        let doc = try #require(r.json as? [String: Any])
        #expect(doc["valid"] as? Bool == false)
        #expect((doc["errors"] as? [[String: Any]])?.first?["code"] as? String == "bad-mailto")
        #expect(((doc["errors"] as? [[String: Any]])?.first?["message"] as? String)?.contains("in the local part") == true)
    }

    @Test("report parse: counts past 2^53−1 or negative make the file not a report, exit 1 (hostile input)") func reportParseHostileNumbers() throws {
        let details = String(repeating: #"{"result-type":"certificate-expired","failed-session-count":999999999999999999},"#, count: 10).dropLast()
        let report = #"{"organization-name":"X","date-range":{"start-datetime":"2026-11-29T00:00:00Z","end-datetime":"2026-11-29T23:59:59Z"},"contact-info":"a@x.example","report-id":"r","policies":[{"policy":{"policy-type":"no-policy-found","policy-domain":"x.example"},"summary":{"total-successful-session-count":COUNT,"total-failure-session-count":1},"failure-details":[DETAILS]}]}"#
        for (count, name) in [("1", "ten details of 999999999999999999"), ("-1", "a negative count")] {
            let r = try CLI.run(["report", "parse", "--json", "-"], stdin: Data(report.replacingOccurrences(of: "COUNT", with: count).replacingOccurrences(of: "DETAILS", with: String(details)).utf8))
            #expect(r.status == 1, "\(name): \(r.stdout) \(r.stderr)")
            #expect(r.stdout.contains("session count must be an integer from 0 to 2^53"), "\(name): \(r.stdout)")
        }
        // The mail pipe: not a report (logged, exit 0 so the MTA does not bounce it), nothing stored.
        let db = FileManager.default.temporaryDirectory.appendingPathComponent("hostile-\(UUID().uuidString.prefix(6)).db").path
        let ingest = try CLI.run(["reports", "ingest", "--database", db, "--dkim", "ignore", "--json"],
                                 stdin: Data(report.replacingOccurrences(of: "COUNT", with: "1").replacingOccurrences(of: "DETAILS", with: String(details)).utf8))
        #expect(ingest.status == 0, "\(ingest.stderr)")
        #expect(ingest.stderr.contains("not a TLS report") && ingest.stderr.contains("session count"), "\(ingest.stderr)")
        #expect((ingest.json as? [String: Any])?["not-reports"] as? Int == 1)
        #expect((try CLI.run(["reports", "list", "--json", "--database", db]).json as? [Any])?.isEmpty == true)
    }

    @Test func recordLint() throws {
        var r = try CLI.run(["record", "lint", "--json", "v=STSv1; id=2019", "0101T000000"])
        #expect(r.status == 0)
        var doc = try #require(r.json as? [String: Any])
        #expect(doc["kind"] as? String == "sts")
        #expect(doc["id"] as? String == "20190101T000000")
        #expect(doc["valid"] as? Bool == true)

        r = try CLI.run(["record", "lint", "--json", "v=TLSRPTv1; rua=mailto:a@x.example,https://r.x.example/v1,http://old.example/"])
        #expect(r.status == 0)
        doc = try #require(r.json as? [String: Any])
        #expect(doc["kind"] as? String == "tlsrpt")
        #expect(doc["rua"] as? [String] == ["mailto:a@x.example", "https://r.x.example/v1"])
        #expect((doc["warnings"] as? [[String: Any]])?.first?["code"] as? String == "unsupported-scheme")

        r = try CLI.run(["record", "lint", "--json", "v=STSv1; id=2016-08-31"])
        #expect(r.status == 1)
        doc = try #require(r.json as? [String: Any])
        #expect(doc["valid"] as? Bool == false)
        #expect((doc["errors"] as? [[String: Any]])?.first?["code"] as? String == "bad-id")

        r = try CLI.run(["record", "lint", "v=spf1 -all"])
        #expect(r.status == 1)
        #expect(r.stdout.contains("neither"))
    }

    @Test func usageErrorsExit2() throws {
        #expect(try CLI.run(["policy", "init"]).status == 2)
        #expect(try CLI.run(["policy", "init", "--domain", "example.com", "--mode", "strict", "--mx", "mx.example.com"]).status == 2)
        #expect(try CLI.run(["policy", "init", "--domain", "example.com", "--mode", "enforce"]).status == 2)
        #expect(try CLI.run(["policy", "init", "--domain", "example.com", "--mx", "bad_host"]).status == 2)
        #expect(try CLI.run(["policy", "init", "--domain", "example.com", "--mx", "mx.example.com", "--max-age", "99999999"]).status == 2)
        #expect(try CLI.run(["policy", "init", "--domain", "example.com", "--mx", "mx.example.com", "--rua", "ftp://x"]).status == 2)
        #expect(try CLI.run(["nonsense"]).status == 2)
        #expect(try CLI.run(["policy", "lint", "--bogus"]).status == 2)
        let help = try CLI.run(["--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("Exit codes"))
    }

    @Test func policyInitProducesWhatLintAccepts() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mtasts-init-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let policyFile = dir.appendingPathComponent("mta-sts.txt").path
        let r = try CLI.run(["policy", "init", "--domain", "Example.COM", "--mx", "mx1.example.com", "*.mx.example.net", "--mode", "testing",
                             "--max-age", "86400", "--rua", "mailto:tls@example.com", "https://r.example.com/v1", "--write-policy", policyFile, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let doc = try #require(r.json as? [String: Any])
        #expect(doc["domain"] as? String == "example.com")
        #expect(doc["policy_url"] as? String == "https://mta-sts.example.com/.well-known/mta-sts.txt")
        let records = try #require(doc["records"] as? [[String: String]])
        #expect(records[0]["name"] == "_mta-sts.example.com")
        #expect(records[1]["name"] == "_smtp._tls.example.com")
        #expect(records[1]["value"] == "v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example.com/v1")
        let policy = try #require(doc["policy"] as? String)
        #expect(policy == "version: STSv1\r\nmode: testing\r\nmx: mx1.example.com\r\nmx: *.mx.example.net\r\nmax_age: 86400\r\n")
        #expect(try String(contentsOfFile: policyFile, encoding: .utf8) == policy)
        // The written file and the records lint clean.
        #expect(try CLI.run(["policy", "lint", policyFile]).status == 0)
        #expect(try CLI.run(["record", "lint", records[0]["value"]!]).status == 0)
        #expect(try CLI.run(["record", "lint", records[1]["value"]!]).status == 0)
        // The id follows the content: a changed policy gets a new id.
        let enforce = try CLI.run(["policy", "init", "--domain", "example.com", "--mx", "mx1.example.com", "*.mx.example.net", "--mode", "enforce", "--max-age", "86400", "--json"])
        let enforceRecords = try #require((enforce.json as? [String: Any])?["records"] as? [[String: String]])
        #expect(enforceRecords[0]["value"] != records[0]["value"])
        // Human output: the zone lines and the roll-out advice, U-labels converted.
        let human = try CLI.run(["policy", "init", "--domain", "münchen.example", "--mx", "mx.münchen.example"], environment: ["NO_COLOR": "1"])
        #expect(human.status == 0)
        #expect(human.stdout.contains("_mta-sts.xn--mnchen-3ya.example."))
        #expect(human.stdout.contains("mx: mx.xn--mnchen-3ya.example"))
        #expect(human.stdout.contains("Roll-out"))
    }

    /// Every file under shared/interop/reports through `mtasts report parse --json`.
    @Test func reportParseEveryInteropFile() throws {
        let reports = CLI.interop.appendingPathComponent("reports")
        #expect(FileManager.default.fileExists(atPath: reports.path), "no interop data at \(reports.path)")
        let r = try CLI.run(["report", "parse", "--json", reports.path])
        #expect(r.status == 1, "the cron mail is not a report, so the run reports a problem")
        let results = try #require(r.json as? [[String: Any]])
        #expect(results.count >= 50)
        let failed = results.filter { $0["ok"] as? Bool == false }
        #expect(failed.count == 1)
        #expect((failed.first?["file"] as? String)?.hasSuffix("tlsrpt-rs/empty.eml") == true)
        #expect((failed.first?["error"] as? String)?.hasPrefix("not a TLS report") == true)
        // A Google mail: headers, canonical report, counts.
        let google = try #require(results.first { ($0["file"] as? String)?.hasSuffix("parsedmarc/google.com_smtp_tls_report.eml") == true })
        #expect(google["source"] as? String == "email")
        let mail = try #require(google["mail"] as? [String: Any])
        #expect(mail["tls-report-domain"] as? String == "cardinalhealth.ca")
        #expect(mail["tls-report-submitter"] as? String == "google.com")
        let entry = try #require((google["reports"] as? [[String: Any]])?.first)
        #expect(entry["media-type"] as? String == "application/tlsrpt+gzip")
        #expect(entry["filename"] as? String == "google.com!cardinalhealth.ca!1725321600!1725407999!001.json.gz")
        let report = try #require(entry["report"] as? [String: Any])
        #expect(report["organization-name"] as? String == "Google Inc.")
        let range = try #require(report["date-range"] as? [String: String])
        #expect(range["start-datetime"] == "2024-09-03T00:00:00Z")
        let policies = try #require(report["policies"] as? [[String: Any]])
        #expect((policies[0]["summary"] as? [String: Int])?["total-successful-session-count"] == 48)
        // The Microsoft date without a zone comes out normalised.
        let ms = try #require(results.first { ($0["file"] as? String)?.hasSuffix("mox/microsoft.eml") == true })
        let msReport = try #require(((ms["reports"] as? [[String: Any]])?.first?["report"]) as? [String: Any])
        #expect((msReport["date-range"] as? [String: String])?["end-datetime"] == "2023-01-10T23:59:59Z")
        #expect(((ms["reports"] as? [[String: Any]])?.first?["warnings"] as? [[String: Any]])?.contains { $0["code"] as? String == "date-without-zone" } == true)
        // The mx-host string form comes out as an array.
        let rfc = try #require(results.first { ($0["file"] as? String)?.hasSuffix("parsedmarc/rfc8460.json") == true })
        let rfcPolicy = try #require(((((rfc["reports"] as? [[String: Any]])?.first?["report"]) as? [String: Any])?["policies"] as? [[String: Any]])?.first?["policy"] as? [String: Any])
        #expect(rfcPolicy["mx-host"] as? [String] == ["*.mail.company-y.example"])
    }

    @Test func reportParseHumanSummaryAndStdin() throws {
        let file = CLI.interop.appendingPathComponent("reports/dmarc-report-viewer/rfc-example.json")
        let r = try CLI.run(["report", "parse", "-"], stdin: try Data(contentsOf: file), environment: ["NO_COLOR": "1"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("Company-X <sts-reporting@company-x.example> on company-y.example for 2016-04-01"))
        #expect(r.stdout.contains("sessions: 5326 ok, 303 failed (94.6% ok)"))
        #expect(r.stdout.contains("starttls-not-supported: 200"))
        let cron = try CLI.run(["report", "parse", CLI.interop.appendingPathComponent("reports/tlsrpt-rs/empty.eml").path])
        #expect(cron.status == 1)
        #expect(cron.stdout.contains("not a TLS report"))
    }

    @Test func reportParseHostileInput() throws {
        // Not UTF-8, truncated gzip, a gzip bomb: clear errors, exit 1, no crash.
        var r = try CLI.run(["report", "parse", "--json", "-"], stdin: Data([0xFF, 0xFE, 0x00, 0x41]))
        #expect(r.status == 1)
        r = try CLI.run(["report", "parse", "--json", "-"], stdin: Data([0x1F, 0x8B, 0x08, 0x00, 0x00]))
        #expect(r.status == 1)
        #expect(((r.json as? [[String: Any]])?.first?["error"] as? String)?.contains("gzip") == true)
        r = try CLI.run(["report", "parse", "--json", "--max-size", "1000", "-"], stdin: Data(String(repeating: " ", count: 5000).utf8))
        #expect(r.status == 1)
    }
}
