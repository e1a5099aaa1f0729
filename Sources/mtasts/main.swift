import Glibc
import MTASTSCLI

// Every command runs as a task on the cooperative pool and ends the process with exit(). The main
// thread only waits: an async main would hand it to dispatch_main, which ends it with
// pthread_exit, and that forced unwind reads the unwind tables of the whole binary (0.6 MB of
// them resident for the life of a daemon; BENCHMARKS.md). Nothing in mtasts runs on the main
// actor, so nothing waits for this thread.
Task.detached { await MTASTS.runMain() }
while true { pause() }
