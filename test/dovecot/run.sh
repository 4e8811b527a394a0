#!/usr/bin/env bash
# Dovecot integration test: a real Dovecot 2.3 with deploy/dovecot's
# configuration and Lua script, against ingest on an embedded JetStream
# (see dovecot_test.go), and the unseen counters (doveadm HTTP API, IMAP
# master user) against it (counters_test.go). Runs when CI=true or
# PUSHPROXY_DOVECOT_IT=1, as root: it installs Debian's dovecot-core, dovecot-imapd, dovecot-lmtpd and
# lua-socket when they are missing. Otherwise it says why it skips and
# exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ "${CI:-}" != "true" && "${PUSHPROXY_DOVECOT_IT:-}" != "1" ]]; then
  echo "dovecot integration test skipped: set PUSHPROXY_DOVECOT_IT=1 (CI=true runs it)"
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "dovecot integration test skipped: it must run as root (it installs packages and runs Dovecot)"
  exit 0
fi

packages=(dovecot-core dovecot-imapd dovecot-lmtpd lua-socket)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} > 0)); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  # If the packaged service starts, it does not disturb the test, which runs
  # its own Dovecot with its own configuration on free loopback ports.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PUSHPROXY_DOVECOT_IT=1 go test -count=1 -v -run '^(TestDovecotIntegration|TestDovecotCounters|TestDovecotReconciles|TestDovecotIMAPWatcher)$' ./test/dovecot/
