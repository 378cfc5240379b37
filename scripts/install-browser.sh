#!/usr/bin/env bash
# Installs headless Chromium and chromedriver (Debian packages `chromium` and `chromium-driver`)
# for the end-to-end browser test, crates/aisle-serve/tests/browser.rs. Idempotent: does nothing
# when /usr/bin/chromium and /usr/bin/chromedriver already exist. Needs root (or sudo) and apt.
#
#   scripts/install-browser.sh
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "chromium and chromedriver already installed: $(/usr/bin/chromium --version 2>/dev/null || true)"
  exit 0
fi

bash "$(dirname "$0")/apt-install.sh" chromium chromium-driver

for bin in /usr/bin/chromium /usr/bin/chromedriver; do
  [ -x "$bin" ] || { echo "install-browser.sh: $bin missing after install" >&2; exit 1; }
done
echo "installed: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) / $(/usr/bin/chromedriver --version 2>/dev/null || echo chromedriver)"
