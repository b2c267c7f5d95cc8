# CUDA kernels (sm_90). SSMLAB_WITH_CUDA: compiled and linked with libtorch_cuda (GPU machines).
# SSMLAB_CUDA_COMPILE_ONLY: nvcc exists but the CUDA LibTorch cannot load here (the CPU machines):
# the .cu sources are still compiled, into an object library nothing links, so they cannot rot.
find_program(SSMLAB_NVCC nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME PATH_SUFFIXES bin)
set(SSMLAB_WITH_CUDA OFF)
set(SSMLAB_CUDA_COMPILE_ONLY OFF)
if(SSMLAB_CUDA STREQUAL "ON" OR (SSMLAB_CUDA STREQUAL "AUTO" AND SSMLAB_NVCC))
  if(SSMLAB_TORCH_HAS_CUDA)
    set(SSMLAB_WITH_CUDA ON)
  elseif(SSMLAB_NVCC)
    set(SSMLAB_CUDA_COMPILE_ONLY ON)
  elseif(SSMLAB_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SSMLAB_CUDA=ON but nvcc was not found")
  endif()
endif()
if(SSMLAB_WITH_CUDA OR SSMLAB_CUDA_COMPILE_ONLY)
  if(NOT CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_COMPILER "${SSMLAB_NVCC}")
  endif()
  set(CMAKE_CUDA_ARCHITECTURES 90)
  enable_language(CUDA)
  # The .cu files are C++17: CMake 3.25 knows no C++20 flag for nvcc (a C++20 CUDA target fails to
  # generate: "requires the language dialect CUDA20"), and CUDA targets otherwise inherit CXX_STANDARD 20.
  # -lineinfo: source lines in profiles, no slowdown.
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  string(APPEND CMAKE_CUDA_FLAGS " -lineinfo")
endif()
if(SSMLAB_WITH_CUDA)
  target_link_libraries(ssmlab_torch INTERFACE
    "-Wl,--no-as-needed" "${SSMLAB_TORCH_LIBDIR}/libtorch_cuda.so" "${SSMLAB_TORCH_LIBDIR}/libc10_cuda.so"
    "-Wl,--as-needed")
  target_compile_definitions(ssmlab_torch INTERFACE SSMLAB_WITH_CUDA=1)
endif()
