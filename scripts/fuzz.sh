#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/ (each compiles MTASTSCore's sources with the fuzzer and
# AddressSanitizer) and runs each for SECONDS, seeded with the kept corpus (Fuzz/corpus/TARGET),
# the test vectors and the interop data, with the target's dictionary (Fuzz/dict/TARGET.dict).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET…]   (targets: policy records rua report-json report-mail dns netstring dkim tlsrpt imap)
# FUZZ_CAMPAIGN=1: a campaign: each target runs until 1,000,000 executions or SECONDS, whichever
# comes first, and the inputs that add coverage are merged into Fuzz/corpus/TARGET (kept in the
# repository, so coverage accumulates from one campaign to the next); figures in .build-fuzz/campaign.txt.
# A crash or a failed round-trip check exits non-zero and leaves the input in .build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(policy records rua report-json report-mail dns netstring dkim tlsrpt imap)
out=.build-fuzz
mkdir -p "$out"
interop=${MTASTS_INTEROP:-../shared/interop}
# A failing check must end the run, not hang it in the Swift backtracer under ASan.
export SWIFT_BACKTRACE=enable=no

source_of() {
    case "$1" in
        policy) echo Fuzz/FuzzPolicy.swift ;;
        records) echo Fuzz/FuzzRecords.swift ;;
        rua) echo Fuzz/FuzzRUA.swift ;;
        report-json) echo Fuzz/FuzzReportJSON.swift ;;
        report-mail) echo Fuzz/FuzzReportMail.swift ;;
        dns) echo Fuzz/FuzzDNS.swift ;;
        netstring) echo Fuzz/FuzzNetstring.swift ;;
        dkim) echo Fuzz/FuzzDKIM.swift ;;
        tlsrpt) echo Fuzz/FuzzTLSRPT.swift ;;
        imap) echo Fuzz/FuzzIMAP.swift ;;
        *) echo "unknown fuzz target: $1" >&2; exit 2 ;;
    esac
}

seed() {
    local target=$1 dir=$out/corpus-$1
    mkdir -p "$dir"
    if [ -d "Fuzz/corpus/$target" ]; then cp -f Fuzz/corpus/"$target"/* "$dir"/ 2>/dev/null || true; fi
    python3 - "$target" "$dir" "$interop" <<'PY'
import json, os, sys, glob, shutil
target, dir, interop = sys.argv[1:4]
vec = 'Tests/MTASTSCoreTests/Vectors'
n = 0
def put(data):
    global n
    n += 1
    open(os.path.join(dir, f'seed-{n:04}'), 'wb').write(data)
if target == 'policy':
    for v in json.load(open(f'{vec}/policies.json')): put(v['input'].encode())
elif target == 'tlsrpt':
    import re
    text = open(f'{interop}/libtlsrpt-datagrams.md').read()
    for m in re.findall(r'^(\{"dpv".*\})$', text, re.M): put(m.encode())
    put(b'{"d": "Example.NET.","pr": "v=TLSRPTv1; rua=mailto:a@b","policies":[{"policy-type":9,"t":0,"f":0,"a": "\xff"}]}')
    put(b'Nov 30 02:24:34 sender postfix/smtp[1]: Untrusted TLS connection established to mx.a.test[127.0.0.1]:25: TLSv1.3\n'
        b'Nov 30 02:24:34 sender postfix/smtp[1]: server certificate verification failed for mx.a.test[127.0.0.1]:25: num=62:hostname mismatch\n'
        b'2026-11-30T02:24:34.1+00:00 sender postfix/smtp[1]: 1B5F: to=<p@a.test>, relay=mx.a.test[127.0.0.1]:25, delay=0.1, dsn=4.7.5, status=deferred (Server certificate not verified)\n')
elif target == 'imap':
    for seed in [b'* OK [CAPABILITY IMAP4rev1 STARTTLS IDLE] ready\r\n', b'A0001 OK [READ-WRITE] SELECT completed\r\n',
                 b'* 3 EXISTS\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\n* OK [UIDNEXT 4] next\r\n',
                 b'* SEARCH 1 2 3\r\n', b'* 1 FETCH (UID 7 BODY[] {5}\r\nhello FLAGS (\\Seen))\r\n', b'+ idling\r\n',
                 b'A0002 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n', b'* BYE shutting down\r\n']:
        put(seed)
elif target == 'netstring':
    for seed in [b'3:abc,', b'0:,', b'17:5:Hello,6:World!,,', b'8:tls a.bc,13:tls good.loc.,', b'3:aa', b'3:aaa_']:
        put(seed)
elif target == 'dns':
    # A response to "test TXT" with a TXT answer and an MX answer, names compressed.
    import struct
    q = b'\x04test\x00' + struct.pack('>HH', 16, 1)
    txt = b'\x0bv=STSv1;id1'
    a1 = b'\xc0\x0c' + struct.pack('>HHIH', 16, 1, 3600, len(txt)) + txt
    mx = struct.pack('>H', 10) + b'\x02mx\xc0\x0c'
    a2 = b'\xc0\x0c' + struct.pack('>HHIH', 15, 1, 3600, len(mx)) + mx
    put(struct.pack('>HHHHHH', 0x1234, 0x81a0, 1, 2, 0, 0) + q + a1 + a2)
    put(bytes(12))
elif target == 'rua':
    for uri in ['mailto:tlsrpt@example.com', 'https://reports.example.com/v1/tlsrpt', 'v=TLSRPTv1; rua=mailto:a@b.example,https://r.b.example/x',
                'mailto:x%3E%0D%0ADATA%0D%0A...@victim.example', 'mailto:a%40b.example%3F@c.example', 'mailto:user@xn--bcher-kva.example?subject=x']:
        put(uri.encode())
elif target == 'records':
    for name in ('sts-records.json', 'tlsrpt-records.json'):
        for v in json.load(open(f'{vec}/{name}')):
            put(b'\x00'.join(b'\x01'.join(s.encode() for s in rr) for rr in v['rrset']))
else:
    for path in glob.glob(f'{interop}/reports/**/*', recursive=True):
        if os.path.isfile(path) and (target in ('report-mail', 'dkim') or path.endswith('.json')):
            put(open(path, 'rb').read())
PY
}

for t in "${targets[@]}"; do
    src=$(source_of "$t")
    bin=$out/fuzz-$t
    if [ ! -x "$bin" ] || [ -n "$(find Sources/MTASTSCore Sources/MailDNS Sources/Socketmap Sources/DKIM Sources/IMAP "$src" -newer "$bin" -name '*.swift' | head -1)" ]; then
        echo "building fuzz target $t"
        if [ "$t" = dns ]; then
            module=(-module-name MailDNS Sources/MailDNS/DNSMessage.swift)
        elif [ "$t" = dkim ]; then
            module=(-module-name DKIM Sources/DKIM/DKIMMessage.swift)
        elif [ "$t" = imap ]; then
            module=(-module-name IMAP Sources/IMAP/IMAPResponse.swift)
        elif [ "$t" = netstring ]; then
            module=(-module-name Socketmap -I Sources/CZlib Sources/MTASTSCore/*.swift Sources/Socketmap/NetstringParser.swift Sources/Socketmap/SocketmapProtocol.swift)
        else
            module=(-module-name MTASTSCore -I Sources/CZlib Sources/MTASTSCore/*.swift)
        fi
        swiftc -O -sanitize=fuzzer,address -parse-as-library "${module[@]}" "$src" -o "$bin" 2>&1 | grep -v "Cannot export local symbol" || true
    fi
    seed "$t"
    dict=()
    [ -f "Fuzz/dict/$t.dict" ] && dict=(-dict="$(pwd)/Fuzz/dict/$t.dict")
    runs=()
    [ -n "${FUZZ_CAMPAIGN:-}" ] && runs=(-runs=1000000)
    echo "fuzzing $t for ${seconds}s${FUZZ_CAMPAIGN:+ or 1,000,000 runs}"
    (cd "$out" && "./fuzz-$t" -max_total_time="$seconds" "${runs[@]}" "${dict[@]}" -max_len=262144 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 "corpus-$t" >"run-$t.log" 2>&1 || true)
    grep -E "^(stat::number_of_executed_units|==|SUMMARY|Done)|ERROR|panic|Fatal" "$out/run-$t.log" || true
    if [ -n "${FUZZ_CAMPAIGN:-}" ]; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/run-$t.log" | tail -1)
        cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$out/run-$t.log" | tail -1)
        secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$out/run-$t.log" | tail -1)
        mkdir -p "Fuzz/corpus/$t"
        before=$(ls "Fuzz/corpus/$t" | wc -l)
        (cd "$out" && "./fuzz-$t" -merge=1 -max_len=65536 "${dict[@]}" "$OLDPWD/Fuzz/corpus/$t" "corpus-$t" >"merge-$t.log" 2>&1 || true)
        after=$(ls "Fuzz/corpus/$t" | wc -l)
        echo "$t: ${execs:-?} executions in ${secs:-?} s, ${cov:-cov ?}, kept corpus $before → $after inputs" | tee -a "$out/campaign.txt"
    fi
    # libFuzzer leaves crash-*/leak-*/timeout-* files for a failure.
    if ls "$out"/crash-* "$out"/leak-* "$out"/timeout-* >/dev/null 2>&1; then
        echo "fuzz target $t failed; inputs in $out" >&2
        exit 1
    fi
done
echo "fuzz: ${#targets[@]} targets ran without a crash"
