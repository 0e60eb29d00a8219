#!/usr/bin/env bash
# Makes sure the Debian packages the tests use are installed. As root it installs what is
# missing; otherwise it stops with the exact apt-get line to run.
set -euo pipefail

# package -> a file that proves it is installed
declare -A PROBES=(
  [postgresql]=/usr/lib/postgresql/15/bin/initdb
  [softhsm2]=/usr/bin/softhsm2-util
  [opensc]=/usr/bin/pkcs11-tool
  [libengine-pkcs11-openssl]=/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so
  [openssl]=/usr/bin/openssl
  [curl]=/usr/bin/curl
  [golang-cfssl]=/usr/bin/cfssl
  [systemd]=/usr/bin/systemd-analyze
  # the several-nodes test puts HAProxy in front of three keyferryd
  [haproxy]=/usr/sbin/haproxy
  # the web console's browser tests drive it with playwright-core (never a downloaded browser)
  [chromium]=/usr/bin/chromium
)

missing=()
for pkg in "${!PROBES[@]}"; do
  probe=${PROBES[$pkg]}
  if [ "$pkg" = libengine-pkcs11-openssl ]; then
    # the engine lives under the multiarch dir of whatever architecture this is
    compgen -G '/usr/lib/*/engines-3/pkcs11.so' >/dev/null && continue
  elif [ -e "$probe" ]; then
    continue
  fi
  missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
IFS=$'\n' sorted=($(sort <<<"${missing[*]}")); unset IFS
if [ "$(id -u)" -ne 0 ]; then
  echo "ERROR: missing Debian packages for the tests; install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${sorted[*]}" >&2
  exit 1
fi
echo "Installing Debian packages the tests need: ${sorted[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${sorted[@]}" >/dev/null
