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
bash "$(dirname "$0")/apt-install.sh" wrk
command -v wrk >/dev/null || { echo "install-wrk.sh: wrk missing after install" >&2; exit 1; }
echo "installed: $(command -v wrk)"
