// libFuzzer entry for one target, picked at compile time by SSMLAB_FUZZ_TARGET (fuzz/CMakeLists.txt builds
// one executable per entry of targets.cpp). An exception escaping the target aborts: libFuzzer's crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ssmlab::fuzz::Target* target = [] {
    for (const auto& t : ssmlab::fuzz::targets())
      if (std::strcmp(t.name, SSMLAB_FUZZ_TARGET) == 0) return &t;
    std::abort();
  }();
  target->run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
