# Warning flags for Lanyard's own code. Generated code (protoc-c) is built
# without -Wconversion: we do not own it.
set(LANYARD_WARNINGS
  -Wall -Wextra -Wformat=2 -Wformat-security -Wshadow -Wpointer-arith
  -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wwrite-strings
  -Wcast-qual -Wconversion -Wundef -Wno-unused-parameter)
if(LANYARD_WERROR)
  list(APPEND LANYARD_WARNINGS -Werror)
endif()
set(LANYARD_HARDENING -fstack-protector-strong -fno-strict-overflow)
if(NOT CMAKE_BUILD_TYPE STREQUAL "Debug" AND NOT LANYARD_SANITIZE AND NOT LANYARD_FUZZ)
  list(APPEND LANYARD_HARDENING -D_FORTIFY_SOURCE=2)
endif()

function(lanyard_target_warnings target)
  target_compile_options(${target} PRIVATE ${LANYARD_WARNINGS} ${LANYARD_HARDENING})
endfunction()
