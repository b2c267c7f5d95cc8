# ccache with the sloppiness that precompiled headers need. CCACHE_BASEDIR makes the paths under the checkout
# relative, so every clone of the repository (CI's fresh clone, a second worktree) hits the same cache entries.
find_program(SSMLAB_CCACHE ccache)
if(SSMLAB_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(_launcher ${CMAKE_COMMAND} -E env
      "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      "CCACHE_BASEDIR=${PROJECT_SOURCE_DIR}"
      ${SSMLAB_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_launcher})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_launcher})
endif()
