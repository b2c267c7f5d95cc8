# python.ops (and python.ops_cuda): tests/python/test_ops.py, opcheck/gradcheck of every ssmlab schema and
# torch.compile of a module calling the ops. Registered only where a Python that imports torch is found at configure
# time: SSMLAB_PYTHON if set, else the project's .venv/bin/python (scripts/setup.sh), else python3 (the GPU
# machine's own PyTorch). Its torch must be the LibTorch this build links (the ops library is loaded into it).
# python.ops_cuda also needs CUDA kernels in this build and a GPU that torch sees. About 1-2 minutes each on CPU.
set(SSMLAB_PYTHON "" CACHE FILEPATH "Python whose torch runs tests/python (empty: .venv/bin/python, else python3)")

set(_py_candidates)
if(SSMLAB_PYTHON)
  list(APPEND _py_candidates "${SSMLAB_PYTHON}")
else()
  if(EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python")
    list(APPEND _py_candidates "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  endif()
  find_program(_ssmlab_python3 python3)
  if(_ssmlab_python3)
    list(APPEND _py_candidates "${_ssmlab_python3}")
  endif()
endif()

set(_py "")
set(_py_why "no Python found (run scripts/setup.sh, or pass -DSSMLAB_PYTHON=<python with torch>)")
foreach(_cand IN LISTS _py_candidates)
  # Prints "<torch version without +local> <1 if a GPU is usable>"; NumPy's absence is only a warning.
  if(NOT EXISTS "${_cand}")
    set(_py_why "${_cand} does not exist")
    continue()
  endif()
  execute_process(
    COMMAND "${_cand}" -W ignore -c
            "import torch; print(torch.__version__.split('+')[0], int(torch.cuda.is_available()))"
    RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE TIMEOUT 180)
  if(NOT _rc EQUAL 0)
    set(_py_why "${_cand} cannot import torch (run scripts/setup.sh)")
    continue()
  endif()
  string(REPLACE " " ";" _out "${_out}")
  list(GET _out 0 _py_torch)
  list(GET _out 1 _py_gpu)
  if(NOT _py_torch VERSION_EQUAL Torch_VERSION)
    set(_py_why "${_cand} has torch ${_py_torch}, this build links LibTorch ${Torch_VERSION}")
    continue()
  endif()
  set(_py "${_cand}")
  break()
endforeach()

if(NOT _py)
  message(STATUS "ssmlab: python.ops NOT registered: ${_py_why}")
  return()
endif()

add_test(NAME python.ops
  COMMAND "${_py}" tests/python/test_ops.py $<TARGET_FILE:ssmlab_ops> --device cpu
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(python.ops PROPERTIES TIMEOUT 1200 ENVIRONMENT "OMP_NUM_THREADS=1")
# bench/peers_adapters.py (the peers kit's gdn adapter) against its float64 loop, outputs and gradients, on CPU.
add_test(NAME python.peers_adapters
  COMMAND "${_py}" bench/peers_adapters.py $<TARGET_FILE:ssmlab_ops> cpu
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(python.peers_adapters PROPERTIES TIMEOUT 300 ENVIRONMENT "OMP_NUM_THREADS=1")
set(_py_tests "python.ops python.peers_adapters")
if(SSMLAB_WITH_CUDA AND _py_gpu)
  add_test(NAME python.ops_cuda
    COMMAND "${_py}" tests/python/test_ops.py $<TARGET_FILE:ssmlab_ops> --device cuda
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(python.ops_cuda PROPERTIES TIMEOUT 1200)
  list(APPEND _py_tests "python.ops_cuda")
else()
  set(_py_cuda_why "this build has no CUDA kernels")
  if(SSMLAB_WITH_CUDA)
    set(_py_cuda_why "torch sees no GPU")
  endif()
  string(APPEND _py_tests " (python.ops_cuda not: ${_py_cuda_why})")
endif()
message(STATUS "ssmlab: ${_py_tests} with ${_py} (torch ${_py_torch})")
