#!/usr/bin/env bash
# Browser test of the relay's devices page (internal/relay/browser_test.go):
# headless Chromium from Debian's packages loads the page and checks that
# badges appear live. Runs when CI=true or PUSHPROXY_BROWSER_IT=1, as root:
# it installs Debian's chromium when it is missing. Otherwise it says why it
# skips and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ "${CI:-}" != "true" && "${PUSHPROXY_BROWSER_IT:-}" != "1" ]]; then
  echo "browser test skipped: set PUSHPROXY_BROWSER_IT=1 (CI=true runs it)"
  exit 0
fi
if ! command -v chromium >/dev/null 2>&1; then
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "browser test skipped: chromium is missing and installing it needs root"
    exit 0
  fi
  echo "installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

go test -count=1 -v -run '^TestDevicesPageInBrowser$' ./internal/relay/
