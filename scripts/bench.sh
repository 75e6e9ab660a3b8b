#!/usr/bin/env bash
# Builds (release) and prints the benchmark's figures. Arguments: [invocations] [concurrency] [sessions]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
BUILD_DIR=$root/build-release BUILD_TYPE=Release "$root/scripts/build.sh" >/dev/null
exec "$root/build-release/bin/agentcore-bench" "$@"
