#!/usr/bin/env bash
# Debian packages the tests need on the machine itself: runc, iptables and debootstrap for the real node
# and its offline images, Chromium and ChromeDriver for the compare-UI test. Installed with apt-get when
# run as root and missing; otherwise each missing one is named and the tests that need it skip (or fail
# in CI). Idempotent: nothing to do is a no-op. Usage: k8s/host-packages.sh
set -euo pipefail

# command → Debian package
declare -A packages=(
  [runc]=runc
  [iptables]=iptables
  [debootstrap]=debootstrap
  [chromium]=chromium
  [chromedriver]=chromium-driver
)

missing=()
for command in "${!packages[@]}"; do
  command -v "$command" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null 2>&1 \
    || missing+=("${packages[$command]}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "host-packages: all present" >&2
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "host-packages: missing ${missing[*]}: install them as root (apt-get install ${missing[*]})" >&2
  exit 0
fi
echo "host-packages: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
