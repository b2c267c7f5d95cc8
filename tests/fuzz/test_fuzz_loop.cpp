// The fuzz targets of fuzz/ under a fixed-seed mutation loop, in the normal suite: every target must take
// every mutated input with no exception other than the documented errors (the target swallows those), and
// none may take long. SSMLAB_FUZZ_ITERATIONS=N runs longer (e.g. 200000 for a soak by hand).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <string>

#include "fuzz/mutator.h"
#include "fuzz/targets.h"

namespace ssmlab::fuzz {
// Short names in ctest's list (gtest prints an unprintable parameter as its bytes).
inline void PrintTo(const Target& t, std::ostream* os) { *os << t.name; }
}  // namespace ssmlab::fuzz

namespace {

using Clock = std::chrono::steady_clock;

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 200)) {
    if (c >= 0x20 && c < 0x7f) out += static_cast<char>(c);
    else out += "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
  }
  return out + (s.size() > 200 ? "..." : "");
}

int64_t iterations() {
  const char* env = std::getenv("SSMLAB_FUZZ_ITERATIONS");
  return env ? std::atoll(env) : 1500;
}

class FuzzLoop : public ::testing::TestWithParam<ssmlab::fuzz::Target> {};

TEST_P(FuzzLoop, MutatedInputsGiveOnlyDocumentedErrors) {
  const auto& target = GetParam();
  const auto seeds = target.seeds();
  ASSERT_FALSE(seeds.empty());
  for (const auto& s : seeds) ASSERT_NO_THROW(target.run(s)) << "a seed of " << target.name << " failed";
  ssmlab::fuzz::Mutator mutator(/*seed=*/0x5eed);
  const int64_t n = iterations();
  int64_t crashes = 0;
  double slowest = 0;
  for (int64_t i = 0; i < n; ++i) {
    const std::string input = mutator.mutate(seeds[static_cast<size_t>(i) % seeds.size()], seeds);
    const auto t0 = Clock::now();
    try {
      target.run(input);
    } catch (const std::exception& e) {
      ++crashes;
      ADD_FAILURE() << target.name << " iteration " << i << ": " << e.what() << "\n  input: " << printable(input);
    } catch (...) {
      ++crashes;
      ADD_FAILURE() << target.name << " iteration " << i << ": non-std exception\n  input: " << printable(input);
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    slowest = std::max(slowest, s);
    EXPECT_LT(s, 1.0) << target.name << " iteration " << i << " took " << s << " s; input: " << printable(input);
    if (crashes > 5) break;
  }
  std::printf("[fuzz] %s: %lld executions, %lld crashes, slowest %.3f s\n", target.name, static_cast<long long>(n),
              static_cast<long long>(crashes), slowest);
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzLoop, ::testing::ValuesIn(ssmlab::fuzz::targets()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
