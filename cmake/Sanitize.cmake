# Sanitizer and fuzzing builds (scripts/sanitize.sh, fuzz/README.md).
#   -DSSMLAB_SANITIZE=address,undefined   instrument every source with these sanitizers (a full rebuild, for CI)
#   -DSSMLAB_FUZZ=ON                      libFuzzer executables of fuzz/ (clang only)
# scripts/sanitize.sh's quick mode instruments only the input-reading code instead (sanitize/CMakeLists.txt).
set(SSMLAB_SANITIZE "" CACHE STRING "Sanitizers to build with, e.g. address,undefined (empty: none)")
option(SSMLAB_FUZZ "Build the libFuzzer targets of fuzz/ (needs clang)" OFF)

if(SSMLAB_SANITIZE)
  # vptr checks need the RTTI of every class crossing into LibTorch, which is not built with UBSan.
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${SSMLAB_SANITIZE};-fno-sanitize=vptr;-fno-omit-frame-pointer;-fno-sanitize-recover=all;-g>")
  add_link_options(-fsanitize=${SSMLAB_SANITIZE})
endif()
if(SSMLAB_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SSMLAB_FUZZ needs clang (CXX=clang++); libFuzzer is part of clang")
  endif()
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:-fsanitize=fuzzer-no-link>")
endif()
