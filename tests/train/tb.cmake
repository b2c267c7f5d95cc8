# tb.readback: TbReadBack.* (tests/train/test_tb_writer.cpp) with SSMLAB_TB_PYTHON set, so that the event files of
# a killed-and-resumed sweep are read back by TensorBoard's own reader (tests/train/tb_readback.py): scalars,
# the hparams experiment and one session per run. Registered only where configure finds a Python that imports
# tensorboard: -DSSMLAB_TB_PYTHON=..., else .venv-tensorboard (scripts/setup.sh), .venv, python3. Elsewhere the
# discovered TbReadBack.* test still decodes the files with the reader written in the test, and configure says
# that the read-back is not registered.
set(_tb_candidates)
if(SSMLAB_TB_PYTHON)
  list(APPEND _tb_candidates "${SSMLAB_TB_PYTHON}")
endif()
list(APPEND _tb_candidates "${PROJECT_SOURCE_DIR}/.venv-tensorboard/bin/python" "${PROJECT_SOURCE_DIR}/.venv/bin/python")
find_program(_tb_python3 python3)
if(_tb_python3)
  list(APPEND _tb_candidates "${_tb_python3}")
endif()
set(_tb_python "")
foreach(_py IN LISTS _tb_candidates)
  if(EXISTS "${_py}")
    execute_process(COMMAND "${_py}" -c "import tensorboard; print(tensorboard.__version__)"
                    RESULT_VARIABLE _tb_rc OUTPUT_VARIABLE _tb_version ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_tb_rc EQUAL 0)
      set(_tb_python "${_py}")
      break()
    endif()
  endif()
endforeach()
if(_tb_python)
  message(STATUS "tb.readback: TensorBoard ${_tb_version} read-back with ${_tb_python}")
  add_test(NAME tb.readback
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/tb_readback.sh $<TARGET_FILE:ssmlab_tests> "${_tb_python}"
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(tb.readback PROPERTIES TIMEOUT 600 ENVIRONMENT "OMP_NUM_THREADS=1")
else()
  message(STATUS "tb.readback NOT registered: no Python here imports tensorboard (scripts/setup.sh installs it "
                 "into .venv-tensorboard; or -DSSMLAB_TB_PYTHON=/path/to/python)")
endif()
