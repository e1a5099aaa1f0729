#!/usr/bin/env bash
# Brings mtasts up on a fresh machine and runs the main job on an example: write a policy and its
# DNS records, lint them, and read a TLS report. Installs what it needs; builds a release binary.
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
