#!/usr/bin/env bash
# Brings mtasts up on a fresh machine: builds a release binary, shows the domain owner's commands
# on an example (write a policy and its DNS records, lint them, store and summarise TLS reports),
# then runs `mtasts serve` — the dashboard, the TLS report receiver (POST /tlsrpt) and its JSON
# API — on its embedded defaults (127.0.0.1:8080, SQLite /var/lib/mtasts/reports.db) in the
# foreground until Ctrl-C, with 14 days of demo reports stored in that database first so the
# dashboard shows something at once. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-release.sh --product mtasts
bin=$(scripts/build-release.sh --show-bin-path)/mtasts
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
db=/var/lib/mtasts/reports.db
mkdir -p "$(dirname "$db")"
echo "== demo reports: 14 days for example.org and example.net (scripts/demo_reports.py), and examples/*.eml,"
echo "   stored in $db — the database mtasts serve reads by default"
python3 scripts/demo_reports.py "$out/demo"
"$bin" reports ingest --database "$db" --dkim ignore "$out"/demo/*.json examples/*.eml
"$bin" reports summary --database "$db" --since "$(date -u -d '14 days ago' +%F)"
echo
echo "The binary is $bin; copy it to /usr/local/bin to use it as 'mtasts'."
echo "The sender's side: '$bin daemon' is the MTA-STS policy daemon for Postfix (see the README)."
echo
echo "== mtasts serve: open the dashboard at http://127.0.0.1:8080/"
echo "   On 127.0.0.1 it needs no log-in. To open it on another address, protect it first:"
echo "   set reports.api_token in a serve configuration (log in with any user name and the token as"
echo "   password), or add dashboard.users with a hash from: $bin serve --hash-password"
echo "   Reports: curl --data-binary @report.json.gz http://127.0.0.1:8080/tlsrpt; JSON at /api/summary. Ctrl-C stops it."
exec "$bin" serve
