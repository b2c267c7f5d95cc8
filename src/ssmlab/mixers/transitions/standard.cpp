// The standard Mamba-1 transition (spec §1.1): A = -exp(A_log), A_log[e, n] = log(n + 1) (S4D-real).
#include <ATen/ATen.h>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/transitions/transition.h"

namespace ssmlab::mixers {
namespace {

class StandardTransition : public TransitionImpl {
 public:
  StandardTransition(int64_t channels, int64_t d_state) : channels_(channels), d_state_(d_state) {
    A_log_ = register_parameter("A_log", at::empty({channels, d_state}));
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    reset(gen);
  }
  // In the parameters dtype (float32 at least): a float64 model keeps A in float64.
  at::Tensor A() override { return -at::exp(A_log_.to(at::promote_types(A_log_.scalar_type(), at::kFloat))); }  // (E, N)
  int64_t state_dim() const override { return d_state_; }
  void reset(at::Generator&) override {
    at::NoGradGuard no_grad;
    A_log_.copy_(at::log(at::arange(1, d_state_ + 1, at::kFloat)).expand({channels_, d_state_}));
  }

 private:
  int64_t channels_, d_state_;
  at::Tensor A_log_;
};

}  // namespace

const std::vector<TransitionInfo>& transition_table() {
  static const std::vector<TransitionInfo> table = {
      {"standard", "A = -exp(A_log), A_log = log(1..N) (S4D-real), spec §1.1"},
      {"polarized", "standard + state 0 with A = 0 (never decays) + last state with A = -100 (never carries), spec §1.2"},
      {"polarized_one", "standard + state 0 with A = 0 (the one-polarized channel only), spec §1.2"},
      {"polarized_zero", "standard + last state with A = -100 (the zero-polarized channel only), spec §1.2"},
  };
  return table;
}

std::shared_ptr<TransitionImpl> make_transition(const std::string& kind, int64_t channels, int64_t d_state,
                                                TransitionArgs args) {
  if (kind == "standard") return std::make_shared<StandardTransition>(channels, d_state);
  if (kind.starts_with("polarized")) {
    args.d_ones = kind == "polarized" || kind == "polarized_one" ? 1 : 0;
    args.d_zeros = kind == "polarized" || kind == "polarized_zero" ? 1 : 0;
    if (kind == "polarized" || kind == "polarized_one" || kind == "polarized_zero")
      return make_polarized_transition(channels, d_state, args);
  }
  std::string names;
  for (const auto& t : transition_table()) names += (names.empty() ? "" : ", ") + t.name;
  fail("unknown transition '", kind, "': expected one of ", names);
}

}  // namespace ssmlab::mixers
