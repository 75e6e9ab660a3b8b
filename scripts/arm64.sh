#!/usr/bin/env bash
# The arm64 build (AgentCore runs linux/arm64), proven on an amd64 machine:
# cross-compiles the whole tree with gcc-aarch64-linux-gnu against an arm64
# Debian root that holds the same -dev packages as scripts/setup.sh, then runs
# the unit tests under qemu-aarch64-static (ctest prepends it: see
# cmake/aarch64-linux-gnu.cmake). On an arm64 machine it is the normal build.
#
#   AC_ARM64_ROOT   where the arm64 root lives (default build-arm64-root; made
#                   once with debootstrap from this machine's Debian mirror,
#                   remade when the package list below changes)
#   BUILD_DIR       build directory (default build-arm64)
#
# Needs root the first time (apt, debootstrap). Exits non-zero on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sysroot=${AC_ARM64_ROOT:-$root/build-arm64-root}
build=${BUILD_DIR:-$root/build-arm64}
# The arm64 twins of setup.sh's build dependencies.
pkgs=libgrpc-dev,libprotobuf-c-dev,libcurl4-openssl-dev,libjansson-dev,libssl-dev,libmicrohttpd-dev,libcmocka-dev,libwslay-dev,libuv1-dev,zlib1g-dev,libseccomp-dev

if [ "$(uname -m)" = aarch64 ]; then
  BUILD_DIR=$build "$root/scripts/build.sh"
  cd "$build" && exec ctest --output-on-failure -L unit
fi

need=()
for t in aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu qemu-aarch64-static:qemu-user-static \
  debootstrap:debootstrap; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "arm64: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The root is only a sysroot and a library prefix for qemu: debootstrap's
# first stage fetches the packages for arm64, and they are unpacked here
# without running anything of theirs (no binfmt_misc needed).
if [ "$(cat "$sysroot/.agentcore-packages" 2>/dev/null)" != "$pkgs" ]; then
  rm -rf "$sysroot" "$sysroot.tmp"
  mkdir -p "$sysroot.tmp/dl" "$sysroot.tmp/root/usr/bin" "$sysroot.tmp/root/usr/sbin" \
    "$sysroot.tmp/root/usr/lib"
  echo "arm64: fetching the arm64 packages with debootstrap" >&2
  debootstrap --download-only --arch=arm64 --variant=minbase --include="$pkgs" \
    bookworm "$sysroot.tmp/dl" "$("$root/scripts/debian-mirror.sh")" >"$sysroot.tmp/debootstrap.log" 2>&1 ||
    { tail -20 "$sysroot.tmp/debootstrap.log" >&2; exit 1; }
  r=$sysroot.tmp/root
  for l in bin sbin lib; do ln -s usr/$l "$r/$l"; done # merged /usr, as bookworm
  for d in "$sysroot.tmp"/dl/var/cache/apt/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$d" | tar -x --keep-directory-symlink -C "$r" -f -
  done
  # Absolute links (libm.so -> /lib/...) would leave the root: make them relative.
  find "$r" -type l -lname '/*' -print0 | while IFS= read -r -d '' l; do
    ln -sfn "$(realpath -m --relative-to="$(dirname "$l")" "$r$(readlink "$l")")" "$l"
  done
  mv "$r" "$sysroot"
  rm -rf "$sysroot.tmp"
  echo "$pkgs" >"$sysroot/.agentcore-packages"
fi

cmake -S "$root" -B "$build" -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" \
  -DAC_SYSROOT="$sysroot" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
# e_machine of the ELF header: 0xb7 is EM_AARCH64.
[ "$(od -An -tx1 -j18 -N2 "$build/bin/agentcore-gateway" | tr -d ' ')" = b700 ] ||
  { echo "arm64: the gateway binary is not an arm64 executable" >&2; exit 1; }

# qemu-user runs one arm64 process; these unit tests need what it does not
# emulate, and run natively on arm64 hosts and in the amd64 suite:
#   test_cm_main     re-executes itself (an arm64 execve needs binfmt_misc)
#   test_tw_fileops  openat2(2) with RESOLVE_BENEATH (qemu 7.2: ENOSYS)
#   test_tw_sandbox, test_tw_runner  namespaces, seccomp and helper processes
#   test_tw_sweep    prctl(PR_SET_CHILD_SUBREAPER) (qemu 7.2: EINVAL)
cd "$build"
exec ctest --output-on-failure -L unit -E '^(test_cm_main|test_tw_fileops|test_tw_sandbox|test_tw_runner|test_tw_sweep)$'
