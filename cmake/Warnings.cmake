# One warning set for all first-party code; -Werror when AC_WERROR (CI) is on.
set(AC_WARNINGS -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
    -Wno-format-nonliteral -Wvla -Wpointer-arith)
if(AC_WERROR)
  list(APPEND AC_WARNINGS -Werror)
endif()
if(AC_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
if(AC_FUZZ)
  # Coverage instrumentation for the libraries the fuzz targets link.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
function(ac_warnings target)
  target_compile_options(${target} PRIVATE ${AC_WARNINGS})
endfunction()
