// cross_entropy: input checks, the "auto" choice, the float64 oracle, and the autograd Functions of the fused
// CPU kernels and of the row-blocked ATen path (README.md beside this file).
#include "ssmlab/ops/cross_entropy/cross_entropy.h"

#include <algorithm>
#include <limits>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/backend.h"
#include "ssmlab/ops/cross_entropy/cpu.h"
#include "ssmlab/ops/cross_entropy/cuda.h"
#include "ssmlab/ops/poison.h"

namespace ssmlab::ops {
namespace {

using at::Tensor;

// Per row of a block: whether the target counts, whether it is in [0, V), and a safe index for gather.
struct CeTargetMasks {
  Tensor counted, valid, safe;  // (n) bool, (n) bool, (n, 1) int64
};

CeTargetMasks ce_masks(const Tensor& tg, int64_t V, int64_t ignore_index) {
  CeTargetMasks m;
  m.counted = tg.ne(ignore_index);
  m.valid = tg.ge(0).logical_and_(tg.lt(V));
  m.safe = at::where(m.valid, tg, at::zeros_like(tg)).unsqueeze(1);
  return m;
}

class CrossEntropyFusedFn : public torch::autograd::Function<CrossEntropyFusedFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& logits,
                                                const Tensor& targets, int64_t ignore_index) {
    ctx->set_materialize_grads(false);
    const Tensor x = logits.contiguous(), tg = targets.contiguous();
#ifdef SSMLAB_WITH_CUDA
    const CrossEntropyOut f = x.is_cuda() ? cross_entropy_cuda::forward(x, tg, ignore_index)
                                          : cross_entropy_cpu::forward(x, tg, ignore_index);
#else
    const CrossEntropyOut f = cross_entropy_cpu::forward(x, tg, ignore_index);
#endif
    ctx->save_for_backward({logits, targets, f.lse});
    ctx->saved_data["ignore_index"] = ignore_index;
    return {f.loss, f.lse};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &logits = saved[0], &targets = saved[1], &lse = saved[2];
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    auto plain = [&](const Tensor& g) { return g.defined() ? g.to(lse.scalar_type()).contiguous() : g; };
#ifdef SSMLAB_WITH_CUDA
    if (logits.is_cuda())
      return {cross_entropy_cuda::backward(logits.contiguous(), targets, ignore_index, lse, plain(grads[0]),
                                          plain(grads[1])),
              Tensor(), Tensor()};
#endif
    Tensor dx = cross_entropy_cpu::backward(logits.contiguous(), targets.contiguous(), ignore_index, lse,
                                            plain(grads[0]), plain(grads[1]));
    return {dx, Tensor(), Tensor()};
  }
};

class CrossEntropyBlockedFn : public torch::autograd::Function<CrossEntropyBlockedFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& logits,
                                                const Tensor& targets, int64_t ignore_index, int64_t block_rows) {
    ctx->set_materialize_grads(false);
    const int64_t M = logits.size(0), V = logits.size(1);
    const auto ct = state_dtype(logits.scalar_type());
    const int64_t rows = block_rows > 0 ? block_rows : cross_entropy_block_rows(M, V);
    Tensor loss = at::empty({M}, logits.options().dtype(ct));
    Tensor lse = at::empty({M}, logits.options().dtype(ct));
    for (int64_t r0 = 0; r0 < M; r0 += rows) {
      const int64_t n = std::min(rows, M - r0);
      // lse = m + log s and loss = log s - (x[t] - m), with m the row max (0 for an all -inf row) and
      // s = sum exp(x - m): the loss never takes the difference of two large numbers (lse - x[t]).
      Tensor m = logits.narrow(0, r0, n).amax({1}, /*keepdim=*/true).to(ct);                 // (n, 1)
      m.masked_fill_(m.isneginf(), 0.0);
      Tensor sh = at::sub(logits.narrow(0, r0, n).to(ct), m);  // (n, V): one widened block (+ one for bf16)
      const auto mk = ce_masks(targets.narrow(0, r0, n), V, ignore_index);
      const Tensor picked = sh.gather(1, mk.safe).squeeze(1);                                 // x[t] - m
      const Tensor logs = sh.exp_().sum({1}).log_();
      sh = Tensor();
      const Tensor lb = m.squeeze(1) + logs;
      const Tensor nan = at::full({}, std::numeric_limits<double>::quiet_NaN(), lb.options());
      const Tensor lossb = at::where(mk.counted, at::where(mk.valid, logs - picked, nan), at::zeros({}, lb.options()));
      lse.narrow(0, r0, n).copy_(lb);
      loss.narrow(0, r0, n).copy_(lossb);
    }
    ctx->save_for_backward({logits, targets, lse});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["rows"] = rows;
    return {loss, lse};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &logits = saved[0], &targets = saved[1], &lse = saved[2];
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const int64_t rows = ctx->saved_data["rows"].toInt();
    const int64_t M = logits.size(0), V = logits.size(1);
    const auto ct = lse.scalar_type();
    const Tensor &gloss = grads[0], &glse = grads[1];
    Tensor dx = at::empty({M, V}, logits.options());
    const Tensor zero = at::zeros({}, lse.options());
    const Tensor nan = at::full({}, std::numeric_limits<double>::quiet_NaN(), lse.options());
    for (int64_t r0 = 0; r0 < M; r0 += rows) {
      const int64_t n = std::min(rows, M - r0);
      const auto mk = ce_masks(targets.narrow(0, r0, n), V, ignore_index);
      // gl = dloss (0 where ignored; NaN where the target is out of range, as its loss), c = gl + dlse.
      Tensor gl = gloss.defined() ? at::where(mk.counted, gloss.narrow(0, r0, n).to(ct), zero)
                                  : at::zeros({n}, lse.options());
      gl = at::where(mk.valid.logical_or(mk.counted.logical_not()), gl, nan);
      const Tensor c = glse.defined() ? gl + glse.narrow(0, r0, n).to(ct) : gl;
      // softmax * c in a new block (never in place on logits, which .to(ct) may return as is).
      Tensor p = at::sub(logits.narrow(0, r0, n).to(ct), lse.narrow(0, r0, n).unsqueeze(1));
      p.exp_().mul_(c.unsqueeze(1));
      p.scatter_(1, mk.safe, p.gather(1, mk.safe) - gl.unsqueeze(1));
      dx.narrow(0, r0, n).copy_(p);
    }
    return {dx, Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

void check_cross_entropy_inputs(const at::Tensor& logits, const at::Tensor& targets) {
  SSMLAB_CHECK(logits.defined() && targets.defined(), "cross_entropy: logits and targets are required");
  SSMLAB_CHECK(logits.dim() == 2 && logits.size(1) >= 1,
               "cross_entropy: logits must be (M, V) with V >= 1; got logits ", tensor_str(logits));
  SSMLAB_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0),
               "cross_entropy: targets must be (M) with M = ", logits.size(0), " (the logits' rows); got targets ",
               tensor_str(targets), ", logits ", tensor_str(logits));
  SSMLAB_CHECK(at::isFloatingType(logits.scalar_type()), "cross_entropy: logits must be floating point; got ",
               tensor_str(logits));
  SSMLAB_CHECK(targets.scalar_type() == at::kLong, "cross_entropy: targets must be int64; got ",
               tensor_str(targets));
  SSMLAB_CHECK(targets.device() == logits.device(), "cross_entropy: logits and targets must be on one device; got ",
               tensor_str(logits), " and ", tensor_str(targets));
}

void check_cross_entropy_targets(const at::Tensor& targets, int64_t vocab, int64_t ignore_index) {
  SSMLAB_CHECK(targets.is_cpu(), "check_cross_entropy_targets: reads the values, so CPU targets only");
  const Tensor tg = targets.contiguous();
  const int64_t* t = tg.const_data_ptr<int64_t>();
  const int64_t M = tg.numel();
  for (int64_t r = 0; r < M; ++r)
    SSMLAB_CHECK(t[r] == ignore_index || (t[r] >= 0 && t[r] < vocab), "cross_entropy: target ", t[r], " at row ", r,
                 " is outside [0, ", vocab, ") (the vocabulary) and is not ignore_index ", ignore_index);
}

int64_t cross_entropy_block_rows(int64_t m, int64_t v) {
  return std::max<int64_t>(1, std::min<int64_t>(std::max<int64_t>(m, 1), kCrossEntropyBlockElements / std::max<int64_t>(v, 1)));
}

bool cross_entropy_cpu_supports(const at::Tensor& logits, const at::Tensor& targets) {
  if (!logits.defined() || !targets.defined() || !logits.is_cpu() || !targets.is_cpu()) return false;
  const auto dt = logits.scalar_type();
  return dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 || dt == at::kHalf;
}

bool cross_entropy_fused_supports(const at::Tensor& logits, const at::Tensor& targets) {
#ifdef SSMLAB_WITH_CUDA
  if (cross_entropy_cuda::supports(logits, targets)) return true;
#endif
  return cross_entropy_cpu_supports(logits, targets);
}

namespace cross_entropy_cuda {
namespace {
OutputPoison ce_cuda_poison;
}  // namespace
void set_poison_outputs(bool on) { ce_cuda_poison.set(on); }
at::Tensor out_empty(at::IntArrayRef sizes, const at::TensorOptions& o) { return ce_cuda_poison.empty(sizes, o); }
}  // namespace cross_entropy_cuda

CrossEntropyOut cross_entropy_reference(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index) {
  const int64_t V = logits.size(1);
  const auto ct = state_dtype(logits.scalar_type());
  const Tensor x = logits.to(at::kDouble);
  // lse = m + log sum exp(x - m) for any constant m per row; the row max (0 for an all -inf row), detached.
  Tensor m = x.detach().amax({1}, /*keepdim=*/true);
  m = at::where(m.isneginf(), at::zeros_like(m), m);
  const Tensor lse = (m + (x - m).exp().sum({1}, /*keepdim=*/true).log()).squeeze(1);
  const auto mk = ce_masks(targets, V, ignore_index);
  const Tensor picked = x.gather(1, mk.safe).squeeze(1);
  const Tensor nan = at::full({}, std::numeric_limits<double>::quiet_NaN(), lse.options());
  const Tensor loss = at::where(mk.counted, at::where(mk.valid, lse - picked, nan), at::zeros({}, lse.options()));
  return {loss.to(ct), lse.to(ct)};
}

CrossEntropyOut cross_entropy_fused(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index) {
  SSMLAB_CHECK(cross_entropy_fused_supports(logits, targets),
               "cross_entropy_fused: unsupported case (CPU logits float32/float64/bfloat16/float16, CPU targets; "
               "or the same on one CUDA device with contiguous rows in a CUDA build); got logits ", tensor_str(logits),
               ", targets ", tensor_str(targets));
  auto outs = CrossEntropyFusedFn::apply(logits, targets, ignore_index);
  return {outs[0], outs[1]};
}

CrossEntropyOut cross_entropy_blocked(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index,
                                      int64_t block_rows) {
  SSMLAB_CHECK(block_rows >= 0, "cross_entropy_blocked: block_rows must be >= 0 (0: automatic); got ", block_rows);
  auto outs = CrossEntropyBlockedFn::apply(logits, targets, ignore_index, block_rows);
  return {outs[0], outs[1]};
}

CrossEntropyOut cross_entropy(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index,
                              const std::string& backend) {
  check_backend_name(backend);
  check_cross_entropy_inputs(logits, targets);
  if (targets.is_cpu()) check_cross_entropy_targets(targets, logits.size(1), ignore_index);
  if (backend == "reference") return cross_entropy_reference(logits, targets, ignore_index);
  // "auto": the fused kernels on CPU and CUDA; elsewhere the blocked ATen path, which never widens more than one block
  // (not the reference, which widens everything to float64).
  if (cross_entropy_fused_supports(logits, targets)) return cross_entropy_fused(logits, targets, ignore_index);
  return cross_entropy_blocked(logits, targets, ignore_index);
}

}  // namespace ssmlab::ops
