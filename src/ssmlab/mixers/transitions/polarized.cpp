// Polarized transitions (spec §1.2, SB zoology/mixers/polar_mamba.py): the learned S4D-real block of the
// standard transition plus constant "polarized" state channels, assembled along the state axis as
//   A = [ one_value x d_ones | -exp(A_log) (E, d_state) | zero_value x d_zeros ]      (E, N_tot)
// so state index 0 is the one-polarized channel (A = 0: exp(dt A) = 1, a pure accumulator) and the last index
// is the zero-polarized channel (A = -100: exp(dt A) ~ 0, no carry-over). The constants are not parameters;
// B and C of every channel stay learned and input-dependent (the mixer's x_proj is N_tot wide).
#include <ATen/ATen.h>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/transitions/transition.h"

namespace ssmlab::mixers {
namespace {

class PolarizedTransition : public TransitionImpl {
 public:
  PolarizedTransition(int64_t channels, int64_t d_state, const TransitionArgs& args)
      : channels_(channels), d_state_(d_state), args_(args) {
    SSMLAB_CHECK(args.d_ones >= 0 && args.d_zeros >= 0 && args.d_ones + args.d_zeros >= 1,
                 "polarized transition: needs at least one polarized channel; got d_ones ", args.d_ones,
                 ", d_zeros ", args.d_zeros);
    SSMLAB_CHECK(args.zero_value < 0, "polarized transition: zero_value must be < 0 (decay exp(dt * A) < 1); got ",
                 args.zero_value);
    A_log_ = register_parameter("A_log", at::empty({channels, d_state}));
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    reset(gen);
  }
  at::Tensor A() override {
    // In the parameter's dtype (float32 at least): a float64 model keeps A in float64.
    const auto ft = A_log_.options().dtype(at::promote_types(A_log_.scalar_type(), at::kFloat));
    const at::Tensor ones = at::full({channels_, args_.d_ones}, args_.one_value, ft);     // (E, d_ones)
    const at::Tensor zeros = at::full({channels_, args_.d_zeros}, args_.zero_value, ft);  // (E, d_zeros)
    return at::cat({ones, -at::exp(A_log_.to(ft)), zeros}, /*dim=*/1);                      // (E, N_tot)
  }
  int64_t state_dim() const override { return args_.d_ones + d_state_ + args_.d_zeros; }
  void reset(at::Generator&) override {
    at::NoGradGuard no_grad;
    A_log_.copy_(at::log(at::arange(1, d_state_ + 1, at::kFloat)).expand({channels_, d_state_}));
  }

 private:
  int64_t channels_, d_state_;
  TransitionArgs args_;
  at::Tensor A_log_;
};

}  // namespace

std::shared_ptr<TransitionImpl> make_polarized_transition(int64_t channels, int64_t d_state,
                                                          const TransitionArgs& args) {
  return std::make_shared<PolarizedTransition>(channels, d_state, args);
}

}  // namespace ssmlab::mixers
