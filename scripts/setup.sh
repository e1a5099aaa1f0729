#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine (run as root). Idempotent:
# apt-get runs only when a package is missing.
set -euo pipefail
packages=(zlib1g-dev python3 time dnsmasq-base openssl ca-certificates)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected at /opt/swift/usr/bin)" >&2; exit 1; }
