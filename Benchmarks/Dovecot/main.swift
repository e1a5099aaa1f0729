// A Dovecot for the IMAP ingestion benchmark (Benchmarks/imap.sh): the test suite's DovecotServer
// (loopback, its own configuration, a certificate from a test CA) with every message file of a
// folder delivered into each of the named mailboxes. Prints one line of JSON (ports, user,
// password, CA file), then serves until its standard input closes.
// Usage: mtasts-bench-dovecot DIR MESSAGE-FOLDER MAILBOX…
import Foundation
import TestSupport

let args = CommandLine.arguments
guard args.count >= 4 else {
    FileHandle.standardError.write(Data("usage: mtasts-bench-dovecot DIR MESSAGE-FOLDER MAILBOX…\n".utf8))
    exit(2)
}
let dir = URL(fileURLWithPath: args[1])
try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
let ca = try TestCA()
let caFile = dir.appendingPathComponent("ca.pem").path
try ca.pem.write(toFile: caFile, atomically: true, encoding: .utf8)
let dovecot = try DovecotServer.start(ca: ca)
let files = try FileManager.default.contentsOfDirectory(atPath: args[2]).sorted()
for mailbox in args[3...] {
    for file in files { _ = try dovecot.deliver(Array(try Data(contentsOf: URL(fileURLWithPath: args[2]).appendingPathComponent(file))), to: mailbox) }
}
let info: [String: Any] = ["imaps_port": dovecot.imapsPort, "imap_port": dovecot.imapPort, "user": dovecot.user, "password": dovecot.password,
                           "ca_file": caFile, "messages": files.count]
FileHandle.standardOutput.write(try JSONSerialization.data(withJSONObject: info) + Data("\n".utf8))
while let _ = readLine() {}
dovecot.stop()
