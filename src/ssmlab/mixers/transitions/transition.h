// Transition parameterisations: how a diagonal SSM gets its continuous-time A (E, N). Mitigations
// (polarization, eigenvalue constraints) are new parameterisations here, never forks of a mixer.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <torch/nn/module.h>

namespace ssmlab::mixers {

class TransitionImpl : public torch::nn::Module {
 public:
  // A (E, N), fp32, assembled from the parameters at every call (differentiable).
  virtual at::Tensor A() = 0;
  virtual int64_t state_dim() const = 0;  // N, the state channels the scan sees
  // Re-draws the parameters with the paper's init (deterministic given `gen`).
  virtual void reset(at::Generator& gen) = 0;
};

struct TransitionInfo {
  std::string name;
  std::string summary;
};
const std::vector<TransitionInfo>& transition_table();

// Settings of the polarized transitions (spec §1.2). make_transition sets d_ones / d_zeros from the kind
// ("polarized": 1 and 1, "polarized_one": 1 and 0, "polarized_zero": 0 and 1); the values come from the mixer's
// options. The paper's zero value is -100, not -inf (spec §6.6).
struct TransitionArgs {
  int64_t d_ones = 0;        // leading channels with the constant A = one_value (decay exactly 1)
  int64_t d_zeros = 0;       // trailing channels with the constant A = zero_value (decay ~0)
  double one_value = 0.0;
  double zero_value = -100.0;
};

// kind: a name from transition_table(); channels E, learned state channels N (the transition may add
// constant channels: state_dim() is what the scan sees).
std::shared_ptr<TransitionImpl> make_transition(const std::string& kind, int64_t channels, int64_t d_state,
                                                TransitionArgs args = {});
std::shared_ptr<TransitionImpl> make_polarized_transition(int64_t channels, int64_t d_state,
                                                          const TransitionArgs& args);

}  // namespace ssmlab::mixers
