# python.ops: tests/python/test_ops.py with the project's Python (.venv from scripts/setup.sh): opcheck of every
# ssmlab schema and torch.compile of a module calling the ops, on CPU. Fails, saying to run scripts/setup.sh,
# where .venv/bin/python is missing or cannot import torch. About 2 minutes on a 2-core machine.
add_test(NAME python.ops
  COMMAND sh -c "py=.venv/bin/python; if [ ! -x \"$py\" ]; then echo 'python.ops: .venv/bin/python not found: run scripts/setup.sh' >&2; exit 1; fi; exec \"$py\" tests/python/test_ops.py \"$0\" cpu"
          $<TARGET_FILE:ssmlab_ops>
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(python.ops PROPERTIES TIMEOUT 1200 ENVIRONMENT "OMP_NUM_THREADS=1")
