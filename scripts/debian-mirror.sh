#!/usr/bin/env bash
# Prints the Debian mirror this machine's apt uses (deb822 .sources or the
# one-line sources.list), for debootstrap: the container-image and arm64
# tests make their Debian roots from the same place apt installs from.
set -euo pipefail
url=$(
  {
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
      /^URIs:/ { u = $2 } /^Suites:/ { s = $0 }
      /^$/ { if (u != "" && s !~ /security/) print u; u = ""; s = "" }
      END { if (u != "" && s !~ /security/) print u }'
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      grep -v security | sed -E 's/^deb (\[[^]]*\] )?([^ ]+).*/\2/'
  } | head -n1 || true
)
echo "${url:-http://deb.debian.org/debian}"
