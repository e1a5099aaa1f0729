import Foundation

/// A long-lived helper process (dnsmasq, openssl s_server) started with posix_spawn. Foundation's
/// Process is not used for these: its reaper blocks in wait4 on a still-running child, and then
/// never notices that another child (the mtasts under test) has exited.
///
/// The helper dies with the test process: it runs under a small shell that also watches a pipe
/// from this process and kills the helper when the pipe closes — at `stop()`, or when this
/// process ends in any way (a test runner that exits without running deinit, a crash, SIGKILL).
public final class Spawned: @unchecked Sendable {
    public let pid: pid_t
    private var lifeline: Int32 = -1

    /// Starts `path` with `arguments`, standard input/output/error to /dev/null
    /// (or standard error to `stderrPath`). Signals are unblocked and reset in the child.
    public init(_ path: String, _ arguments: [String], stderrPath: String? = nil, stdoutPath: String? = nil) throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw DNSMasq.Missing(description: "pipe: \(String(cString: strerror(errno)))") }
        // Neither end may leak into other children (dup2 onto 0 clears the flag in this child).
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[0], 0)
        posix_spawn_file_actions_addclose(&actions, fds[1])
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        // sh -c: start the helper with /dev/null as input, kill it when the lifeline (stdin) closes,
        // and exit when the helper exits (so an early exit, e.g. a port in use, is seen).
        let script = #"exec 3<&0; "$@" </dev/null & c=$!; ( read _ <&3; kill -9 $c 2>/dev/null ) & exec 3<&-; wait $c"#
        let argv = (["/bin/sh", "-c", script, "sh", path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv, environ)
        close(fds[0])
        guard rc == 0 else {
            close(fds[1])
            throw DNSMasq.Missing(description: "cannot start \(path): \(String(cString: strerror(rc)))")
        }
        self.pid = pid
        lifeline = fds[1]
    }

    /// Has the process exited (reaping it if so)?
    /// Waits until the helper's log file contains `text` (its ready line); throws with the log
    /// when the helper exits or `timeout` passes first.
    public func waitForLog(_ path: String, contains text: String, what: String, timeout: TimeInterval = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        func log() -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        while !log().contains(text) {
            if hasExited || Date() > deadline { throw PostgresServer.Missing(description: "\(what) did not start: \(log())") }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// The helper's own pid (it runs under a small shell that watches the lifeline).
    public var childPID: pid_t? {
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").first.flatMap { pid_t($0) }
    }

    public var hasExited: Bool {
        if exited { return true }
        var status: Int32 = 0
        exited = waitpid(pid, &status, WNOHANG) == pid
        return exited
    }
    private var exited = false

    public func stop() {
        guard lifeline >= 0 else { return }
        close(lifeline)  // the watcher kills the helper; the shell then exits
        lifeline = -1
        guard !exited else { return }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        exited = true
    }

    deinit { stop() }
}
