# LibTorch. find_package(Torch) reads Torch_DIR (set by scripts/build.sh) or CMAKE_PREFIX_PATH.
# We link libtorch_cpu + libc10 directly: the wheel's libtorch.so pulls libtorch_cuda.so, whose
# dependencies (cuSPARSELt, cuFile, NVSHMEM) exist only where the full CUDA wheel set is installed.
# The CUDA wheel's config probes GPUs with try_run unless told the architecture; ours is sm_90.
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "9.0")
endif()
find_package(Torch REQUIRED)
get_filename_component(SSMLAB_TORCH_ROOT "${TORCH_INSTALL_PREFIX}" ABSOLUTE)
set(SSMLAB_TORCH_LIBDIR "${SSMLAB_TORCH_ROOT}/lib")

add_library(ssmlab_torch INTERFACE)
target_include_directories(ssmlab_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(ssmlab_torch INTERFACE $<$<COMPILE_LANGUAGE:CXX>:${_torch_flags}>)
target_link_libraries(ssmlab_torch INTERFACE
  "${SSMLAB_TORCH_LIBDIR}/libtorch_cpu.so" "${SSMLAB_TORCH_LIBDIR}/libc10.so")

# Is the CUDA half of this LibTorch loadable here (all its shared-library dependencies present)?
set(SSMLAB_TORCH_HAS_CUDA OFF)
if(EXISTS "${SSMLAB_TORCH_LIBDIR}/libtorch_cuda.so")
  execute_process(COMMAND ldd "${SSMLAB_TORCH_LIBDIR}/libtorch_cuda.so"
                  OUTPUT_VARIABLE _ldd RESULT_VARIABLE _ldd_rc ERROR_QUIET)
  if(_ldd_rc EQUAL 0 AND NOT _ldd MATCHES "not found")
    set(SSMLAB_TORCH_HAS_CUDA ON)
  endif()
endif()

# Runtime search path: torch's lib folder, plus CUDA runtime wheels that scripts/setup.sh may add.
set(SSMLAB_RPATH "${SSMLAB_TORCH_LIBDIR}")
get_filename_component(_site "${SSMLAB_TORCH_ROOT}" DIRECTORY)
foreach(_d "${_site}/nvidia/cu13/lib" "${_site}/nvidia/cuda_runtime/lib" "${_site}/nvidia/cuda_cupti/lib")
  if(EXISTS "${_d}")
    list(APPEND SSMLAB_RPATH "${_d}")
  endif()
endforeach()
set(CMAKE_BUILD_RPATH "${SSMLAB_RPATH}")
set(CMAKE_INSTALL_RPATH "${SSMLAB_RPATH}")
