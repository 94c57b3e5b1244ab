#!/usr/bin/env bash
# Install what the book's browser test needs: Debian's Chromium (headless) and a CJK font, so
# that Japanese text shows in screenshots. Not real mode's list (install-system-packages.sh),
# which stays equal to binder/apt.txt.
#
# Usage: sudo scripts/install-browser-packages.sh [--check]
#   --check   only say whether Chromium is installed (exit 1 if not), install nothing.
# Idempotent: nothing is installed when both are present.
set -euo pipefail

PACKAGES=(chromium fonts-noto-cjk)

have() { command -v chromium >/dev/null 2>&1 && [ -d /usr/share/fonts/opentype/noto ]; }

if [ "${1:-}" = "--check" ]; then
  if have; then echo "browser packages: present"; exit 0; fi
  echo "missing: chromium or fonts-noto-cjk"; exit 1
fi
if have; then echo "browser packages: already installed"; exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "error: installing Debian packages needs root. Run: sudo $0" >&2; exit 1
fi
command -v apt-get >/dev/null || { echo "error: no apt-get here (Debian or Ubuntu needed)" >&2; exit 1; }
echo "browser packages: installing ${PACKAGES[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         "${PACKAGES[@]}" >/dev/null; }
have || { echo "error: chromium still missing after install" >&2; exit 1; }
echo "browser packages: done ($(chromium --version 2>/dev/null))"
