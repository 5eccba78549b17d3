#!/usr/bin/env bash
# Set up a development environment: .venv with finalcopy and its test tools,
# plus (as root, on Debian) the system parts the tests start for real:
# OpenSSH's sshd, ntfs-3g, exfat-fuse + exfatprogs, e2fsprogs (ext4 volumes),
# and the standard checkers b3sum / xxh128sum; and libyajl2, the JSON
# validator of `finalcopy run` (without it, a ~10x slower fallback validates).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(openssh-server openssh-client ntfs-3g exfat-fuse exfatprogs e2fsprogs b3sum xxhash rsync util-linux strace libyajl2)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages (tests needing them will skip): ${missing[*]}" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# pip and the build backend are chatty; their output is kept for when it fails.
log=.venv/setup.log
if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup: pip install failed (log above, also in $log)" >&2
  exit 1
fi
