#!/usr/bin/env bash
# Installs wrk (Debian package), the load generator `aisle bench search` drives for its
# concurrent-clients column. Idempotent. Needs root (or sudo) and apt.
#
#   scripts/install-wrk.sh && target/release/aisle bench search
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
  echo "wrk already installed: $(command -v wrk)"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-wrk.sh: needs root (or sudo) to apt-get install wrk" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends wrk
command -v wrk >/dev/null || { echo "install-wrk.sh: wrk missing after install" >&2; exit 1; }
echo "installed: $(command -v wrk)"
