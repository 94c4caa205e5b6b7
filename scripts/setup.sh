#!/usr/bin/env bash
# Idempotent set-up for dynamips_mgr: Python virtualenv with the project installed, and the
# dynamips binary (Debian/Ubuntu package). Quick on a second run. Prints what a non-root user
# must run instead of failing when it cannot install dynamips itself.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DYNAMIPS_MGR_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

stamp="$venv/.installed-$(sha1sum "$here/pyproject.toml" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating virtualenv in $venv" >&2
  "$python" -m venv "$venv"
  log="$venv/setup.log"
  if ! { "$venv/bin/pip" install --quiet --upgrade pip && \
         "$venv/bin/pip" install --quiet -e "$here[test]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup: installing the Python packages failed (full log: $log)" >&2
    exit 1
  fi
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

have_dynamips() { command -v dynamips >/dev/null 2>&1 || [ -x /usr/bin/dynamips ]; }

enable_debian_nonfree() {
  # deb822 sources (Debian 12): add non-free to the Components of the main archive entries.
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -f "$f" ] && ! grep -qE '^Components:.*\bnon-free\b' "$f"; then
    sed -i -E '/^Components:/ { / non-free( |$)/! s/$/ non-free/ }' "$f"
  fi
  # one-line sources.list style
  if [ -f /etc/apt/sources.list ] && grep -qE '^deb .*debian' /etc/apt/sources.list \
     && ! grep -qE '^deb .*debian.* non-free( |$)' /etc/apt/sources.list; then
    sed -i -E '/^deb .*debian/ { / non-free( |$)/! s/$/ non-free/ }' /etc/apt/sources.list
  fi
}

enable_ubuntu_multiverse() {
  local f=/etc/apt/sources.list.d/ubuntu.sources
  if [ -f "$f" ] && ! grep -qE '^Components:.*\bmultiverse\b' "$f"; then
    sed -i -E '/^Components:/ s/$/ multiverse/' "$f"
  fi
  if [ -f /etc/apt/sources.list ] && ! grep -qE '^deb .* multiverse' /etc/apt/sources.list; then
    sed -i -E '/^deb .*ubuntu/ s/$/ multiverse/' /etc/apt/sources.list
  fi
}

if ! have_dynamips; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing the dynamips package" >&2
    if grep -qi ubuntu /etc/os-release 2>/dev/null; then enable_ubuntu_multiverse; else enable_debian_nonfree; fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dynamips >&2
  else
    echo "setup: dynamips is not installed and this user cannot install it. Run as root:" >&2
    echo "  enable the 'non-free' component (Debian) or 'multiverse' (Ubuntu) in your apt sources, then" >&2
    echo "  apt-get update && apt-get install -y dynamips" >&2
  fi
fi
