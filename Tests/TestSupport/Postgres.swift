import Foundation

/// A PostgreSQL server (Debian's) in a temporary directory on 127.0.0.1, for one test: initdb as
/// the postgres user (initdb refuses root), pg_ctl start on a free port, stopped on deinit.
public final class PostgresServer: @unchecked Sendable {
    public let port: Int
    public let directory: String
    public var dsn: String { "host=127.0.0.1 port=\(port) user=postgres dbname=postgres connect_timeout=3" }
    private var running = true

    public struct Missing: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    static var binaries: String? {
        let root = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root))?.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) } ?? []
        return versions.map { "\(root)/\($0)/bin" }.first { FileManager.default.isExecutableFile(atPath: "\($0)/pg_ctl") }
    }

    public init() throws {
        guard let bin = PostgresServer.binaries else {
            throw Missing(description: "PostgreSQL is not installed (apt-get install postgresql); scripts/setup.sh installs it")
        }
        port = TestServer.freePort()
        directory = "/tmp/mtasts-pg-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try PostgresServer.sh("chown postgres:postgres \(directory)")
        try PostgresServer.sh("su postgres -c '\(bin)/initdb -D \(directory)/data -A trust -U postgres --no-sync' >\(directory)/initdb.log 2>&1")
        try PostgresServer.sh("su postgres -c \"\(bin)/pg_ctl -D \(directory)/data -w -l \(directory)/log -o '-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off' start\" >/dev/null 2>&1")
    }

    /// Starts the stopped server again, same data and port (a database that comes back).
    public func start() throws {
        guard !running, let bin = PostgresServer.binaries else { return }
        try PostgresServer.sh("su postgres -c \"\(bin)/pg_ctl -D \(directory)/data -w -l \(directory)/log -o '-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off' start\" >/dev/null 2>&1")
        running = true
    }

    /// Stops the server at once (a test of what a client does when the database goes away).
    public func stop() {
        guard running, let bin = PostgresServer.binaries else { return }
        running = false
        try? PostgresServer.sh("su postgres -c '\(bin)/pg_ctl -D \(directory)/data -m immediate stop' >/dev/null 2>&1")
    }

    /// Freezes the server with SIGSTOP (the postmaster and every backend): connections are still
    /// accepted by the kernel, but nothing answers (a hung database, not a dead one).
    public func freeze() throws { try signalAll("STOP") }

    /// Lets a frozen server run again.
    public func thaw() throws { try signalAll("CONT") }

    private func signalAll(_ signal: String) throws {
        let pidFile = try String(contentsOfFile: "\(directory)/data/postmaster.pid", encoding: .utf8)
        guard let pid = pidFile.split(separator: "\n").first.map(String.init), Int(pid) != nil else {
            throw Missing(description: "no postmaster.pid in \(directory)/data")
        }
        try PostgresServer.sh("kill -\(signal) \(pid); pkill -\(signal) -P \(pid); true")
    }

    /// `psql -At -c SQL` as the postgres user: the rows, one per line.
    public func psql(_ sql: String) throws -> [String] {
        guard let bin = PostgresServer.binaries else { throw Missing(description: "PostgreSQL is not installed") }
        let out = try CLI.program("\(bin)/psql", ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-At", "-c", sql])
        return out.stdout.split(separator: "\n").map(String.init)
    }

    deinit {
        try? thaw()
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs a shell command to completion with posix_spawn and waitpid (Foundation's Process can
    /// miss the exit of a child that forks a daemon, as pg_ctl does).
    public static func sh(_ command: String) throws {
        var pid: pid_t = 0
        let parts: [String] = ["/bin/sh", "-c", command]
        let argv = parts.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        guard posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ) == 0 else { throw Missing(description: "cannot run: \(command)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        guard status == 0 else { throw Missing(description: "failed (\(status)): \(command)") }
    }
}

extension CLI {
    /// Runs any program to completion (short-lived tools such as postmap and curl).
    public static func program(_ path: String, _ arguments: [String], stdin: Data? = nil) throws -> Output {
        try run(arguments, stdin: stdin, executable: URL(fileURLWithPath: path))
    }
}
