#!/usr/bin/env bash
# Brings mtasts up on a fresh machine: builds a release binary, shows the domain owner's commands
# on an example (write a policy and its DNS records, lint them, store and summarise TLS reports),
# then runs `mtasts serve` — the TLS report receiver (POST /tlsrpt) and its JSON API — on its
# embedded defaults (127.0.0.1:8080, SQLite /var/lib/mtasts/reports.db) in the foreground until
# Ctrl-C. Installs what it needs.
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
echo "== mtasts reports ingest examples/*.eml; mtasts reports summary (a demo database in $out)"
"$bin" reports ingest --database "$out/demo.db" --dkim ignore --verbose examples/*.eml
"$bin" reports summary --database "$out/demo.db"
echo
echo "The binary is $bin; copy it to /usr/local/bin to use it as 'mtasts'."
echo "The sender's side: '$bin daemon' is the MTA-STS policy daemon for Postfix (see the README)."
echo
echo "== mtasts serve (reports: curl --data-binary @report.json.gz http://127.0.0.1:8080/tlsrpt;"
echo "   then: $bin reports summary   or   curl http://127.0.0.1:8080/api/summary). Ctrl-C stops it."
exec "$bin" serve
