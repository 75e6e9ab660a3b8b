# Cross-compiling for linux/arm64 (what AgentCore runs) from an amd64 host:
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DAC_SYSROOT=DIR ...
# DIR is an arm64 Debian root holding the -dev packages (scripts/arm64.sh makes
# one with debootstrap). Tests run under qemu-aarch64-static with that root as
# its library prefix, so `ctest` works unchanged on the amd64 host.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
if(NOT AC_SYSROOT)
  set(AC_SYSROOT "$ENV{AC_SYSROOT}")
endif()
if(NOT AC_SYSROOT OR NOT EXISTS "${AC_SYSROOT}/usr/include")
  message(FATAL_ERROR "AC_SYSROOT must name an arm64 Debian root with the -dev packages")
endif()
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES AC_SYSROOT) # try_compile projects too
set(CMAKE_SYSROOT "${AC_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH "${AC_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER) # protoc-c runs on the build host
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${AC_SYSROOT}")
set(ENV{PKG_CONFIG_LIBDIR}
  "${AC_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${AC_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
# The sysroot's shared libraries name their own dependencies by soname only.
set(CMAKE_EXE_LINKER_FLAGS_INIT
  "-Wl,-rpath-link,${AC_SYSROOT}/usr/lib/aarch64-linux-gnu -Wl,-rpath-link,${AC_SYSROOT}/lib/aarch64-linux-gnu")
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static -L "${AC_SYSROOT}")
