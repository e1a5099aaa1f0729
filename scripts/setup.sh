#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine (run as root). Idempotent:
# apt-get runs only when a package is missing.
set -euo pipefail
# dovecot-imapd: the IMAP server of the IMAP ingestion tests; chromium and chromium-driver: the
# dashboard's browser tests; gdb: the test watchdog's stack dump of a test process that hangs.
packages=(zlib1g-dev libsqlite3-dev libpq-dev python3 python3-venv time dnsmasq-base openssl ca-certificates curl postgresql postfix dovecot-imapd chromium chromium-driver gdb)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    # Postfix asks how to configure itself: not at all (tests give it its own directory).
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected at /opt/swift/usr/bin)" >&2; exit 1; }
# An independent DKIM signer/verifier for the tests (dkimpy from PyPI), in its own venv, with
# PyNaCl, which dkimpy needs for Ed25519 (RFC 8463) and does not install by itself. Pinned.
tools=/opt/mtasts-tools/venv
if ! "$tools/bin/python" -c 'import dkim, nacl.signing, importlib.metadata as m; assert m.version("dkimpy") == "1.1.8"' 2>/dev/null; then
    echo "setup: installing dkimpy 1.1.8 and PyNaCl 1.6.2 into $tools"
    [ -x "$tools/bin/pip" ] || python3 -m venv "$tools"
    "$tools/bin/pip" install -q --disable-pip-version-check dkimpy==1.1.8 pynacl==1.6.2
fi
"$tools/bin/python" -c 'import dkim, nacl.signing' || { echo "setup: dkimpy or PyNaCl is missing from $tools" >&2; exit 1; }
# selenium (and what it pulls in), pinned in Tests/Browser/requirements.txt, for the dashboard's
# browser tests in Debian's chromium.
if ! "$tools/bin/python" -c 'import selenium, importlib.metadata as m; assert m.version("selenium") == "4.51.0"' 2>/dev/null; then
    echo "setup: installing selenium 4.51.0 into $tools"
    "$tools/bin/pip" install -q --disable-pip-version-check -r "$(dirname "$0")/../Tests/Browser/requirements.txt"
fi
"$tools/bin/python" -c 'import selenium' || { echo "setup: selenium is missing from $tools" >&2; exit 1; }
