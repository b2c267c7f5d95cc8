#include "ssmlab/models/long_eval.h"

#include <algorithm>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/cross_entropy/cross_entropy.h"

namespace ssmlab::models {

namespace {
// Puts the module in eval mode for a scope and restores its mode, also when an error leaves the scope.
class EvalScope {
 public:
  explicit EvalScope(torch::nn::Module& m) : m_(m), was_training_(m.is_training()) { m_.eval(); }
  ~EvalScope() { m_.train(was_training_); }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  torch::nn::Module& m_;
  bool was_training_;
};
}  // namespace

void run_segments(LanguageModelImpl& model, const at::Tensor& tokens, int64_t segment, const SegmentFn& on_segment,
                  std::vector<mixers::State>* states) {
  SSMLAB_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong,
               "run_segments: tokens must be (B, L) int64; got ", shape_str(tokens.sizes()), " ",
               c10::toString(tokens.scalar_type()));
  SSMLAB_CHECK(segment >= 1, "run_segments: segment must be >= 1 token; got ", segment);
  for (const auto& b : model.blocks)
    SSMLAB_CHECK(b->mixer->supports_stateful(), "run_segments: mixer '", b->mixer->kind(),
                 "' cannot carry its state across segments (no forward_stateful; supported: mamba1, mamba2, "
                 "s4d, h3, rwkv4, rwkv5, rwkv6, hgrn2, deltanet, gated_deltanet, kda, mamba3; not attention)");
  const auto params = model.parameters();
  SSMLAB_CHECK(!params.empty(), "run_segments: the model has no parameters");
  const c10::Device device = params.front().device();
  at::NoGradGuard no_grad;
  EvalScope eval(model);
  std::vector<mixers::State> fresh;
  if (states == nullptr) {
    fresh = model.init_state(tokens.size(0), device);
    states = &fresh;
  }
  const int64_t L = tokens.size(1);
  for (int64_t t0 = 0; t0 < L; t0 += segment) {
    const int64_t l = std::min(segment, L - t0);
    const at::Tensor piece = tokens.narrow(1, t0, l).to(device);             // (B, l)
    const at::Tensor logits = model.forward_stateful(piece, *states);       // (B, l, V)
    on_segment(t0, logits);
  }
}

at::Tensor next_token_losses(LanguageModelImpl& model, const at::Tensor& tokens, int64_t segment) {
  SSMLAB_CHECK(tokens.dim() == 2, "next_token_losses: tokens must be (B, L); got ", shape_str(tokens.sizes()));
  const int64_t B = tokens.size(0), L = tokens.size(1);
  at::Tensor losses = at::empty({B, std::max<int64_t>(L - 1, 0)}, at::kFloat);  // (B, L-1) on CPU
  run_segments(model, tokens, segment, [&](int64_t t0, const at::Tensor& logits) {
    // Position t predicts token t+1; the sequence's last position has no target.
    const int64_t n = std::min(logits.size(1), L - 1 - t0);
    if (n <= 0) return;
    // ops::cross_entropy reads the logits in their own dtype: no float32 (B, n, V) copy or log-softmax.
    const int64_t V = logits.size(-1);
    const at::Tensor target = tokens.narrow(1, t0 + 1, n).reshape({-1}).to(logits.device(), at::kLong);  // (B n)
    // Every position counts: an ignore_index no token can take (a bad token is an error naming its row).
    const int64_t no_ignore = std::numeric_limits<int64_t>::min();
    const at::Tensor loss = ops::cross_entropy(logits.narrow(1, 0, n).reshape({-1, V}), target, no_ignore).loss;
    losses.narrow(1, t0, n).copy_(loss.reshape({B, n}));
  });
  return losses;
}

}  // namespace ssmlab::models
