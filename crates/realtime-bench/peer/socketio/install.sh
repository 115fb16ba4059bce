#!/usr/bin/env bash
# Installs the Socket.IO peer's dependencies into this directory (idempotent).
set -euo pipefail

script="${BASH_SOURCE[0]}"
case "$script" in
  */*) cd "${script%/*}" ;;
esac

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "peer/socketio/install.sh: '$tool' not found on PATH; install Node.js (v18+) with npm to run the Socket.IO peer" >&2
    exit 1
  fi
done

# Cheap up-to-date check: socket.io is installed, and the lockfile (if any) is
# not newer than npm's record of the last install.
if [[ -f node_modules/socket.io/package.json && -f node_modules/.package-lock.json ]]; then
  if [[ ! -f package-lock.json || ! package-lock.json -nt node_modules/.package-lock.json ]] \
    && [[ ! package.json -nt node_modules/.package-lock.json ]]; then
    echo "socket.io peer: dependencies up to date"
    exit 0
  fi
fi

if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

# npm install may write package-lock.json after node_modules/.package-lock.json;
# mark the install as newest so the next run's check skips it.
touch node_modules/.package-lock.json 2>/dev/null || true

if [[ ! -f node_modules/socket.io/package.json ]]; then
  echo "peer/socketio/install.sh: npm finished but node_modules/socket.io is missing" >&2
  exit 1
fi
echo "socket.io peer: installed socket.io $(node -p 'require("./node_modules/socket.io/package.json").version')"
