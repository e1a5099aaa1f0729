#!/usr/bin/env bash
# IMAP ingestion (release build): N distinct report mails (default 10,000, Benchmarks/make_reports.py
# from the interop reports) in two mailboxes of a local Dovecot (mtasts-bench-dovecot: the test
# suite's DovecotServer, loopback, implicit TLS); `mtasts reports ingest --imap` takes one mailbox
# into SQLite, parsedmarc 11.1.0 (PyPI) the other into its JSON/CSV output (its IMAP input, as its
# users run it: [imap] + [mailbox], messages moved to an archive folder, no DNS). Wall time, CPU
# and max RSS of each (`/usr/bin/time`), messages/s, and what each stored.
# Usage: Benchmarks/imap.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
interop=${MTASTS_INTEROP:-../shared/interop}
work=.build-bench/imap
rm -rf "$work" && mkdir -p "$work"
source Benchmarks/peers.sh
source Benchmarks/lib.sh
need_parsedmarc
scripts/build-release.sh --product mtasts >/dev/null
scripts/build-release.sh --product mtasts-bench-dovecot >/dev/null
bindir=$(scripts/build-release.sh --show-bin-path)
python3 Benchmarks/make_reports.py "$interop" "$work/gen" "$n" >/dev/null
mkfifo "$work/hold"
"$bindir/mtasts-bench-dovecot" "$work/dovecot" "$work/gen/Maildir/new" INBOX Peer <"$work/hold" >"$work/dovecot.json" &
dovecot=$!
exec 3>"$work/hold"   # keeps Dovecot up until this script ends
trap 'exec 3>&-; wait $dovecot 2>/dev/null || true' EXIT
for _ in $(seq 600); do [ -s "$work/dovecot.json" ] && break; sleep 0.5; done
read -r port user password ca < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["imaps_port"], d["user"], d["password"].replace(" ", "\\x20"), d["ca_file"])' "$work/dovecot.json")
password=$(printf '%b' "$password")
echo "machine: $(nproc) vCPU, load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ); $n report mails in each mailbox"

printf '%s' "$password" >"$work/pw"
/usr/bin/time -f "%e %U %S %M" -o "$work/t-ours" "$bindir/mtasts" reports ingest --imap "imaps://${user/@/%40}@localhost:$port/INBOX" \
    --imap-password-file "$work/pw" --imap-ca-file "$ca" --dkim ignore --json --database "$work/ours.db" >"$work/ours.json" 2>"$work/ours.log"
cat >"$work/parsedmarc.ini" <<INI
[general]
save_aggregate = False
save_forensic = False
save_smtp_tls = True
output = $PWD/$work/peer-out
silent = True
offline = True
[mailbox]
reports_folder = Peer
archive_folder = PeerArchive
watch = False
delete = False
batch_size = 0
[imap]
host = localhost
port = $port
ssl = True
skip_certificate_verification = True
user = $user
password = $password
INI
/usr/bin/time -f "%e %U %S %M" -o "$work/t-peer" .build-bench/venv/bin/parsedmarc -c "$work/parsedmarc.ini" >"$work/peer.log" 2>&1 || true
python3 - "$work" "$n" <<'PY'
import json, os, sys
w, n = sys.argv[1], int(sys.argv[2])
def t(name):
    e, u, s, m = open(f"{w}/t-{name}").read().split()[-4:]
    return float(e), float(u) + float(s), int(m) / 1024
ours = json.load(open(f"{w}/ours.json"))
oe, oc, om = t("ours")
pe, pc, pm = t("peer")
peer_reports = 0
for f in ("smtp_tls.json",):
    p = os.path.join(w, "peer-out", f)
    if os.path.exists(p):
        try: peer_reports = len(json.load(open(p)))
        except Exception: pass
print(f"{'tool':<34} {'seconds':>8} {'CPU s':>7} {'msgs/s':>8} {'max RSS':>8}  stored")
print(f"{'mtasts reports ingest --imap':<34} {oe:8.2f} {oc:7.2f} {n / oe:8.0f} {om:6.0f} MB  {ours['stored']} reports of {ours['messages']} messages")
print(f"{'parsedmarc 11.1.0 (IMAP)':<34} {pe:8.2f} {pc:7.2f} {n / pe:8.0f} {pm:6.0f} MB  {peer_reports} SMTP TLS reports in smtp_tls.json")
print(f"ratio: {pe / oe:.1f}x parsedmarc's wall time, {pc / max(oc, 0.01):.1f}x its CPU")
with open(os.environ["RESULTS"], "a") as out:
    out.write(json.dumps({"bench": "imap", "what": f"report mails taken from a Dovecot mailbox over IMAPS and stored, {n} ({ours['stored']} stored; peer: {peer_reports})",
                          "unit": "messages/s", "ours": round(n / oe), "peer": round(n / pe), "peer_name": "parsedmarc 11.1.0 (IMAP)",
                          "ours_cpu_us": round(oc / n * 1e6), "peer_cpu_us": round(pc / n * 1e6), "ours_rss_mb": round(om, 1), "peer_rss_mb": round(pm, 1)}) + "\n")
PY
