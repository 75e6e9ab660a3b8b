#!/usr/bin/env bash
# Command 2: build and run the whole test suite (ctest), twice: a normal build
# and an AddressSanitizer + UndefinedBehaviorSanitizer build; then a bounded
# libFuzzer smoke run of every fuzz target; then deployment: the container
# image and both container modes on a Docker engine (ctest -L docker), and the
# arm64 build with its unit tests under qemu (ctest -L arm64). Those need root
# the first time (apt, dockerd, debootstrap). Exits non-zero on any failure.
#   --quick   the normal build only, without the deployment tests
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { echo "==> $*"; }

step "normal build + ctest"
BUILD_DIR=$root/build "$root/scripts/build.sh"
(cd "$root/build" && ctest --output-on-failure -LE '^(docker|arm64)$')

[ "$quick" = 1 ] && exit 0

step "ASan + UBSan build + ctest"
BUILD_DIR=$root/build-asan BUILD_TYPE=Debug "$root/scripts/build.sh" -DAC_SANITIZE=ON
(cd "$root/build-asan" &&
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1 \
  LSAN_OPTIONS=suppressions=$root/tests/lsan.supp \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --output-on-failure -LE '^(docker|arm64)$')

step "libFuzzer smoke run (bounded)"
BUILD_DIR=$root/build-fuzz BUILD_TYPE=Debug CC=clang "$root/scripts/build.sh" -DAC_FUZZ=ON -DBUILD_TESTING=ON
(cd "$root/build-fuzz" && ctest --output-on-failure -L fuzz)

step "deployment: container image and modes (docker), arm64 build under qemu"
(cd "$root/build" && ctest --output-on-failure -L '^(docker|arm64)$')
