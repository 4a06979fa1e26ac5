#!/usr/bin/env bash
# Installs Debian packages for the repo's set-up scripts, quietly and without recommends.
# Usage: scripts/apt-install.sh WHO PACKAGE...   (WHO names the caller in the log line; no
# packages: nothing to do).
set -euo pipefail
who=$1
shift
[ $# -gt 0 ] || exit 0
echo "$who: installing $*"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
