// Fault injection for crash-safety tests: when the environment variable SSMLAB_FAULT_AT names a point, the
// process ends there at once with status 137, as a SIGKILL would leave it (no destructors, no flushing beyond
// what was already written). Points are named where they are placed, e.g. "after_final_checkpoint".
#pragma once
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ssmlab {

inline void fault_point(const char* name) {
  const char* want = std::getenv("SSMLAB_FAULT_AT");
  if (want == nullptr || std::strcmp(want, name) != 0) return;
  std::fflush(nullptr);
  ::_exit(137);
}

}  // namespace ssmlab
