// The test program's main: GoogleTest's, except that a run whose every selected test was skipped (the CUDA suites
// on a machine without a GPU) exits 77, which ctest reports as "Skipped" (SKIP_RETURN_CODE, tests/cmake/suites.cmake.in).
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  const testing::UnitTest* u = testing::UnitTest::GetInstance();
  if (rc == 0 && u->test_to_run_count() > 0 && u->skipped_test_count() == u->test_to_run_count()) return 77;
  return rc;
}
