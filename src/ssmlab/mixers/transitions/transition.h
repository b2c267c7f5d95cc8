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

// kind: a name from transition_table(); channels E, state N.
std::shared_ptr<TransitionImpl> make_transition(const std::string& kind, int64_t channels, int64_t d_state);

}  // namespace ssmlab::mixers
