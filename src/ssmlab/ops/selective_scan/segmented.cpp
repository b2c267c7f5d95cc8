// The selective scan split along time into S segments that run side by side (selective_scan.h,
// selective_scan_segments). One scan kernel walks the sequence of a (batch, channel block) pair in order, so a
// long sequence with few such pairs (B2 L8192 E1536: 96 blocks of 32 channels on a 132-SM H100) leaves most of
// the GPU idle. With h_loc[s] the state a segment reaches from a zero state and decay[s] = exp(A * sum_t delta'_t)
// over it (the product of its per-step decays), the state entering segment s is
//   h_in[0] = h0,   h_in[s + 1] = decay[s] * h_in[s] + h_loc[s]         (pass 2, S steps on (B, E, N) tensors)
// because the recurrence is linear in the state. Pass 1 runs the scan on the (B S, L / S) segments from zero,
// pass 3 again from h_in with D and the gate: twice the scan's work, S times the parallelism. Autograd carries
// the gradients through all three passes (the scan's backward takes d final_state and gives d initial_state).
#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"

namespace ssmlab::ops {

int64_t selective_scan_segments(int64_t batch, int64_t len, int64_t channels, const at::Device& device) {
  // SSMLAB_SCAN_SEGMENTS: unset or "auto" (the policy below), "1" (never split), k >= 2 (k segments wherever k
  // divides L; tests and benchmarks).
  const char* env = std::getenv("SSMLAB_SCAN_SEGMENTS");
  const std::string v = env ? env : "";
  if (!v.empty() && v != "auto") {
    char* end = nullptr;
    const long k = std::strtol(v.c_str(), &end, 10);
    SSMLAB_CHECK(end != v.c_str() && *end == '\0' && k >= 1,
                 "SSMLAB_SCAN_SEGMENTS='", v, "': expected unset, \"auto\" or a segment count >= 1");
    return (k > 1 && len >= k && len % k == 0) ? k : 1;
  }
  // Auto, CUDA only (the CPU kernel is already parallel over channels, and a CPU has few cores): split when
  // fewer than 8192 (batch, channel) rows would run (B E / 32 blocks against ~132 SMs x 3 resident blocks),
  // into the fewest segments that reach ~12288 rows, each at least 512 steps and dividing L.
  if (!device.is_cuda() || batch * channels >= 8192) return 1;
  int64_t best = 1;
  for (int64_t k = 2; k <= 16; k *= 2) {
    if (len % k != 0 || len / k < 512) break;
    best = k;
    if (batch * channels * k >= 12288) break;
  }
  return best;
}

SelectiveScanOut selective_scan_segmented(const SelectiveScanFn& scan, int64_t segments, const at::Tensor& u,
                                          const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                                          const at::Tensor& C, const std::optional<at::Tensor>& D,
                                          const std::optional<at::Tensor>& z,
                                          const std::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                          const std::optional<at::Tensor>& initial_state) {
  const int64_t b = u.size(0), l = u.size(1), e = u.size(2), n = A.size(1), s = segments;
  SSMLAB_CHECK(s >= 1 && l % s == 0, "selective_scan_segmented: ", s, " segments must divide L = ", l);
  if (s == 1) return scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state);
  const int64_t ls = l / s;
  auto seg = [&](const at::Tensor& t) {  // (B, L, ...) -> (B S, L / S, ...): a view of contiguous inputs
    std::vector<int64_t> sz = {b * s, ls};
    for (int64_t d = 2; d < t.dim(); ++d) sz.push_back(t.size(d));
    return t.reshape(sz);
  };
  const at::Tensor u1 = seg(u), d1 = seg(delta), B1 = seg(B), C1 = seg(C);
  // Pass 1: each segment from a zero state; only its final state is used (no D, no gate).
  const at::Tensor h_loc =
      scan(u1, d1, A, B1, C1, std::nullopt, std::nullopt, delta_bias, delta_softplus, std::nullopt)
          .final_state.view({b, s, e, n});
  // Each segment's whole decay, exp(A sum_t delta'_t), with delta' as the kernels form it.
  const auto ct = state_dtype(u.scalar_type());
  at::Tensor dl = delta.to(ct);
  if (delta_bias) dl = dl + delta_bias->to(ct);
  if (delta_softplus) dl = at::softplus(dl);
  const at::Tensor decay = at::exp(dl.view({b, s, ls, e}).sum(2).unsqueeze(-1) * A.to(ct));  // (B, S, E, N)
  // Pass 2: the state entering each segment.
  std::vector<at::Tensor> h_in;
  h_in.reserve(s);
  at::Tensor h = initial_state ? initial_state->to(ct) : at::zeros({b, e, n}, u.options().dtype(ct));
  for (int64_t i = 0; i < s; ++i) {
    h_in.push_back(h);
    if (i + 1 < s) h = decay.select(1, i) * h + h_loc.select(1, i);
  }
  // Pass 3: every segment from its true entry state, with D and the gate.
  const auto r = scan(u1, d1, A, B1, C1, D, z ? std::optional<at::Tensor>(seg(*z)) : std::nullopt, delta_bias,
                      delta_softplus, at::stack(h_in, 1).view({b * s, e, n}));
  return {r.y.view({b, l, e}), r.final_state.view({b, s, e, n}).select(1, s - 1)};
}

}  // namespace ssmlab::ops
