// Shared by the selective_state_update tests: run a decode-step function over every time step of a scan's
// inputs (ops/selective_scan_naive.h's ScanInputs), so the loop can be checked against the whole-sequence
// scan oracles (naive_scan_forward, selective_scan_reference).
#pragma once
#include <functional>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "ops/selective_scan_naive.h"

namespace ssmlab::test {

// state, x, dt, A, B, C, D, z, dt_bias, softplus -> y; updates state in place.
using StepFn = std::function<at::Tensor(at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                        const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool)>;

// Steps t = 0 .. L-1 from `state` (updated in place); returns y (B, L, E).
inline at::Tensor loop_steps(const StepFn& step, at::Tensor& state, const ScanInputs& in) {
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < in.u.size(1); ++t) {
    const at::Tensor z = in.z.defined() ? in.z.select(1, t) : at::Tensor();
    ys.push_back(step(state, in.u.select(1, t), in.delta.select(1, t), in.A, in.B.select(1, t), in.C.select(1, t),
                      opt(in.D), opt(z), opt(in.delta_bias), in.softplus));
  }
  return at::stack(ys, 1);
}

}  // namespace ssmlab::test
