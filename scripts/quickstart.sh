#!/usr/bin/env bash
# Brings mtasts up on a fresh machine: builds a release binary, shows the domain owner's commands
# on an example (write a policy and its DNS records, lint them, read TLS reports), then runs the
# sender's policy daemon for Postfix on its embedded defaults (127.0.0.1:8461, SQLite cache in
# /var/lib/mtasts) in the foreground until Ctrl-C. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product mtasts
bin=$(swift build -c release --show-bin-path)/mtasts
out=$(mktemp -d)
echo
echo "== mtasts policy init (the policy file and the DNS records to publish)"
"$bin" policy init --domain example.com --mx mail.example.com "*.mx.example.net" --mode testing \
    --rua mailto:tlsrpt@example.com --write-policy "$out/mta-sts.txt"
echo
echo "== mtasts policy lint $out/mta-sts.txt"
"$bin" policy lint "$out/mta-sts.txt"
echo
echo "== mtasts record lint (the _mta-sts record of gmail.com, and a TLS-RPT record)"
"$bin" record lint "v=STSv1; id=20190429T010101;"
"$bin" record lint "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"
echo
echo "== mtasts report parse examples/"
"$bin" report parse examples/
echo
echo "The binary is $bin; copy it to /usr/local/bin to use it as 'mtasts'."
echo
echo "== mtasts daemon (Postfix main.cf: smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix)"
echo "   try: postmap -q gmail.com socketmap:inet:127.0.0.1:8461:postfix   or   $bin query gmail.com"
echo "   Ctrl-C stops it."
exec "$bin" daemon
