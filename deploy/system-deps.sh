#!/usr/bin/env bash
# Installs the Debian packages fedge's tests start themselves (a real broker, a real
# database, systemd-analyze for the service units, Chromium for the dashboard, promtool for the alert rules) when they are missing and we run as root; otherwise says what is missing.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)  # the service units' checks
[ -x /usr/bin/chromium ] || need+=(chromium)  # the dashboard's browser tests (Playwright)
command -v buildah >/dev/null 2>&1 || need+=(buildah)  # OCI images without a daemon (make images)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool: the alert rules' checks
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
else
  echo "missing Debian packages (tests that need them will skip): ${need[*]}" >&2
fi
