#!/usr/bin/env bash
# Runs before `npm test`: installs the Debian packages the test suite drives for real
# (Chromium for the admin panel, openssl, wrk, script, libfaketime for the agent's renewal
# through the compiled binary, PostgreSQL for throwaway clusters, nginx in front of a cluster
# of nodes, docker-compose to check compose.yaml) when they are missing and we may.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v script >/dev/null 2>&1 || need+=(bsdutils)
command -v faketime >/dev/null 2>&1 || need+=(faketime)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "The tests need: ${need[*]}. Install them (Debian: sudo apt-get install -y ${need[*]}) and run again." >&2
  exit 1
fi
echo "installing Debian packages for the tests: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
