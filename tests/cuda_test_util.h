// What the CUDA op tests share: the visible skip without a GPU, and the NaN poison of the caching allocator
// (an output or gradient element a kernel never writes most likely reads NaN, and every result is checked
// finite).
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ssmlab/core/device.h"

#define SKIP_WITHOUT_CUDA()                                              \
  do {                                                                   \
    if (!ssmlab::cuda_available()) GTEST_SKIP() << "no CUDA device";     \
  } while (0)

namespace ssmlab::test {

// Hands the caching allocator back blocks filled with NaN, sizes spanning its small and large pools.
inline void poison_allocator() {
  std::vector<at::Tensor> blocks;
  for (int64_t n : {int64_t{1} << 8, int64_t{1} << 12, int64_t{1} << 16, int64_t{1} << 20, int64_t{1} << 23})
    for (int rep = 0; rep < 3; ++rep)
      blocks.push_back(at::full({n}, std::numeric_limits<float>::quiet_NaN(),
                                at::TensorOptions().dtype(at::kFloat).device(at::Device(at::kCUDA, 0))));
  blocks.clear();  // back to the cache, NaN-filled
}

// Every element finite; a failure names the count and the first offender (unwritten output or overflow).
inline ::testing::AssertionResult all_finite(const at::Tensor& t, const std::string& what) {
  if (!t.defined()) return ::testing::AssertionFailure() << what << ": undefined";
  const at::Tensor c = t.detach().to(at::kCPU, at::kDouble);
  const int64_t bad = c.numel() - at::isfinite(c).sum().item<int64_t>();
  if (bad == 0) return ::testing::AssertionSuccess();
  const int64_t first = at::logical_not(at::isfinite(c)).flatten().nonzero()[0].item<int64_t>();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << c.numel() << " elements of "
                                       << t.sizes() << " not finite (first at flat index " << first << ": "
                                       << c.flatten()[first].item<double>()
                                       << "); unwritten output (NaN poison) or overflow";
}

}  // namespace ssmlab::test
