# The test suites that drive the mtasts binary with real peers (dnsmasq, Postfix, postmap,
# PostgreSQL, curl, dkimpy): the end-to-end group of scripts/test.sh, and what scripts/tsan.sh runs
# against a ThreadSanitizer build. Sourced by both.
# (PolicyResolverTests runs with the in-process group: its look-ups are async and time-limited, and
# the synchronous end-to-end tests would hold the cooperative threads they need; it starts dnsmasq
# but waits on nothing else.)
endtoend='^(DaemonTests|ReceiverTests|SenderTests|MTASTSCheckTests|MTASTSCLITests|MailDNSTests)\.'
