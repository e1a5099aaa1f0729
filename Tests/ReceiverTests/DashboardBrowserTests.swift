import Foundation
import Testing
import TestSupport

/// The dashboard in a real headless Chromium (Debian's chromium and chromium-driver, driven by
/// selenium from PyPI: Tests/Browser/dashboard_test.py): `mtasts serve` protected by a token,
/// filled over POST /tlsrpt with 10 days × 2 senders × 2 domains; the pages load without console
/// errors, the charts hold the expected bars and points, drill-down links reach the right
/// reports, the log-in is refused without credentials, a phone-sized viewport does not scroll
/// sideways. Screenshots of each page at desktop and phone size go to `.build-screenshots/`.
@Suite(.serialized) struct DashboardBrowserTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("overview, domain, drill-down and report pages in Chromium, desktop and phone")
    func browser() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("browser-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let python = "/opt/mtasts-tools/venv/bin/python"
        #expect(FileManager.default.isExecutableFile(atPath: python), "scripts/setup.sh installs selenium into /opt/mtasts-tools/venv")
        // A user with a bcrypt hash made by the command a postmaster uses, beside the token.
        let hash = try CLI.run(["serve", "--hash-password"], stdin: Data("correct horse\n".utf8))
        #expect(hash.status == 0 && hash.stdout.hasPrefix("$2"), "\(hash.stderr)")
        let serve = try Serve(dir: dir, database: dir.appendingPathComponent("b.db").path, extra: """
            reports:
              api_token: browser-token
            dashboard:
              users:
                alice: "\(hash.stdout.trimmingCharacters(in: .whitespacesAndNewlines))"
            """)
        let fill = try CLI.run([Self.root.appendingPathComponent("Tests/Browser/fill.py").path, serve.base], executable: URL(fileURLWithPath: "/usr/bin/python3"))
        #expect(fill.status == 0, "\(fill.stdout) \(fill.stderr)")
        // The configured user logs in too (HTTP basic with the bcrypt-checked password).
        let alice = try curl(["-u", "alice:correct horse", serve.base + "/"])
        #expect(alice.status == 200)
        #expect(try curl(["-u", "alice:wrong", serve.base + "/"]).status == 401)
        let expect = dir.appendingPathComponent("expect.json")
        try """
            {"domains": {"ready.test": {"points": 10, "bars": 10, "stacks": 0, "readiness": "ready for enforce"},
                         "notyet.test": {"points": 10, "bars": 10, "stacks": 2, "readiness": "not ready"}},
             "drill": {"domain": "notyet.test", "table": "by-mx-host", "key": "mx2.notyet.test", "reports": ["m-n-3", "m-n-4"]}}
            """.write(to: expect, atomically: true, encoding: .utf8)
        let shots = Self.root.appendingPathComponent(".build-screenshots").path
        let run = try CLI.run([Self.root.appendingPathComponent("Tests/Browser/dashboard_test.py").path, "--base", serve.base, "--user", "any",
                               "--password", "browser-token", "--expect", expect.path, "--screenshots", shots],
                              executable: URL(fileURLWithPath: python))
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        let summary = run.stdout.split(separator: "\n").last.map(String.init) ?? ""
        print("browser test: \(summary)")
        #expect(summary.hasSuffix(" 0 failed"), "\(run.stdout)")
        for page in ["overview", "domain", "report"] {
            for size in ["desktop", "phone"] {
                let file = "\(shots)/\(page)-\(size).png"
                let bytes = (try? Data(contentsOf: URL(fileURLWithPath: file))) ?? Data()
                #expect(bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) && bytes.count > 10_000, "\(file)")
            }
        }
    }
}
