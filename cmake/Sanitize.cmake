# Sanitizer and fuzzing builds (scripts/sanitize.sh, fuzz/README.md).
#   -DSSMLAB_SANITIZE=address,undefined   instrument with these sanitizers (link flags on every executable)
#   -DSSMLAB_SANITIZE_SOURCES=<regex>     only sources whose path matches are instrumented; the rest compile
#                                         as in a normal build (so ccache serves them). Default: every source.
#   -DSSMLAB_FUZZ=ON                      libFuzzer executables of fuzz/ (clang only)
# LibTorch itself is not instrumented: ASan still intercepts its allocations, and its own leaks at exit are
# not ours, so scripts/sanitize.sh runs with detect_leaks=0.
set(SSMLAB_SANITIZE "" CACHE STRING "Sanitizers to build with, e.g. address,undefined (empty: none)")
set(SSMLAB_SANITIZE_SOURCES "" CACHE STRING "Regex of the source paths to instrument (empty: all)")
option(SSMLAB_FUZZ "Build the libFuzzer targets of fuzz/ (needs clang)" OFF)

set(SSMLAB_SANITIZE_FLAGS "")
if(SSMLAB_SANITIZE)
  # vptr checks need RTTI of every class crossing into LibTorch, which is built without UBSan: false alarms.
  set(SSMLAB_SANITIZE_FLAGS -fsanitize=${SSMLAB_SANITIZE} -fno-sanitize=vptr -fno-omit-frame-pointer
                            -fno-sanitize-recover=all -g)
  add_link_options(-fsanitize=${SSMLAB_SANITIZE})
  if(NOT SSMLAB_SANITIZE_SOURCES)
    add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${SSMLAB_SANITIZE_FLAGS}>")
  endif()
endif()
if(SSMLAB_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SSMLAB_FUZZ needs clang (CXX=clang++); libFuzzer is part of clang")
  endif()
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:-fsanitize=fuzzer-no-link>")
endif()

# Instruments the sources of `target` that match SSMLAB_SANITIZE_SOURCES (call it where the target is made).
function(ssmlab_sanitize target)
  if(NOT SSMLAB_SANITIZE OR NOT SSMLAB_SANITIZE_SOURCES)
    return()
  endif()
  get_target_property(sources ${target} SOURCES)
  foreach(src IN LISTS sources)
    if(src MATCHES "${SSMLAB_SANITIZE_SOURCES}" AND src MATCHES "\\.cpp$")
      # The precompiled header was built without the flags; gcc would refuse it for these files.
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${SSMLAB_SANITIZE_FLAGS}"
                                                    SKIP_PRECOMPILE_HEADERS ON)
    endif()
  endforeach()
endfunction()
