#include "ssmlab/analysis/analysis.h"

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

namespace ssmlab::analysis {

at::Tensor sample_inputs(const Context& ctx, int64_t count) {
  SSMLAB_CHECK(count >= 1, "sample_inputs: count must be >= 1; got ", count);
  SSMLAB_CHECK(!ctx.data.empty() && ctx.data.front().inputs.defined() && ctx.data.front().inputs.size(0) > 0,
               "task '", ctx.task.name(), "' has no test examples to analyse");
  const int64_t L = ctx.data.front().inputs.size(1);
  std::vector<at::Tensor> parts;
  int64_t have = 0;
  for (const auto& seg : ctx.data) {
    if (have >= count) break;
    if (seg.inputs.size(1) != L) continue;  // one length, so the batch is rectangular
    const int64_t take = std::min(count - have, seg.inputs.size(0));
    parts.push_back(seg.inputs.narrow(0, 0, take));
    have += take;
  }
  return at::cat(parts, 0).to(ctx.device);  // (n, L) or (n, L, C)
}

}  // namespace ssmlab::analysis
