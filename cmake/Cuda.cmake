# CUDA kernels (sm_90). SSMLAB_CUDA picks the mode:
#   AUTO  (default) ON where nvcc, a loadable CUDA LibTorch and a GPU (nvidia-smi -L) are all present; CHECK where
#         only nvcc is (the CPU machines and CI); OFF without nvcc.
#   ON    compiled and linked with libtorch_cuda (SSMLAB_WITH_CUDA), GPU or not.
#   CHECK SSMLAB_CUDA_COMPILE_ONLY: the .cu sources go through nvcc's front ends and device compiler to PTX
#         (no SASS, no host object) into an object library nothing links, so they cannot rot, at half the cost of
#         a full compile. Linking libtorch_cuda on a machine without a GPU would only slow every test's start.
#   OFF   no CUDA at all.
find_program(SSMLAB_NVCC nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME PATH_SUFFIXES bin)
set(SSMLAB_WITH_CUDA OFF)
set(SSMLAB_CUDA_COMPILE_ONLY OFF)
if(NOT SSMLAB_CUDA MATCHES "^(AUTO|ON|OFF|CHECK)$")
  message(FATAL_ERROR "SSMLAB_CUDA=${SSMLAB_CUDA}: the choices are AUTO, ON, CHECK, OFF")
endif()
if(SSMLAB_CUDA STREQUAL "AUTO" AND SSMLAB_NVCC)
  set(_gpu_seen OFF)
  find_program(SSMLAB_NVIDIA_SMI nvidia-smi)
  if(SSMLAB_NVIDIA_SMI)
    execute_process(COMMAND "${SSMLAB_NVIDIA_SMI}" -L OUTPUT_VARIABLE _smi RESULT_VARIABLE _smi_rc ERROR_QUIET)
    if(_smi_rc EQUAL 0 AND _smi MATCHES "GPU [0-9]")
      set(_gpu_seen ON)
    endif()
  endif()
  if(_gpu_seen AND SSMLAB_TORCH_HAS_CUDA)
    set(SSMLAB_WITH_CUDA ON)
  else()
    set(SSMLAB_CUDA_COMPILE_ONLY ON)
  endif()
elseif(SSMLAB_CUDA STREQUAL "ON")
  if(NOT SSMLAB_NVCC)
    message(FATAL_ERROR "SSMLAB_CUDA=ON but nvcc was not found")
  elseif(NOT SSMLAB_TORCH_HAS_CUDA)
    message(FATAL_ERROR "SSMLAB_CUDA=ON but this LibTorch's CUDA half (libtorch_cuda.so) is missing or cannot load its "
                        "libraries (ldd reports 'not found'); use SSMLAB_CUDA=CHECK or install the CUDA wheels")
  endif()
  set(SSMLAB_WITH_CUDA ON)
elseif(SSMLAB_CUDA STREQUAL "CHECK")
  if(NOT SSMLAB_NVCC)
    message(FATAL_ERROR "SSMLAB_CUDA=CHECK but nvcc was not found")
  endif()
  set(SSMLAB_CUDA_COMPILE_ONLY ON)
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
  if(SSMLAB_WITH_CUDA)
    string(APPEND CMAKE_CUDA_FLAGS " -lineinfo")
  else()
    # The check stops at PTX: drop the SASS target that TorchConfig adds to CMAKE_CUDA_FLAGS (it would run ptxas).
    string(REGEX REPLACE "-gencode[ =]+arch=compute_[0-9a-z]+,code=sm_[0-9a-z]+" "" CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")
  endif()
endif()
if(SSMLAB_WITH_CUDA)
  target_link_libraries(ssmlab_torch INTERFACE
    "-Wl,--no-as-needed" "${SSMLAB_TORCH_LIBDIR}/libtorch_cuda.so" "${SSMLAB_TORCH_LIBDIR}/libc10_cuda.so"
    "-Wl,--as-needed")
  target_compile_definitions(ssmlab_torch INTERFACE SSMLAB_WITH_CUDA=1)
endif()
