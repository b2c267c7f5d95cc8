#include "ssmlab/mixers/mixer.h"

#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

const at::Tensor& State::at(const std::string& name) const {
  auto it = tensors.find(name);
  SSMLAB_CHECK(it != tensors.end(), "mixer state has no tensor '", name, "'");
  return it->second;
}

at::Tensor MixerImpl::forward_stateful(const at::Tensor& x, State& state, Trace* trace) {
  (void)x, (void)state, (void)trace;
  fail("mixer '", kind(), "' has no state-carrying forward (forward_stateful): segment-by-segment "
       "evaluation needs a mixer whose supports_stateful() is true (mamba1, mamba2, s4d, h3, rwkv4, rwkv5, rwkv6, "
       "hgrn2, deltanet, gated_deltanet, kda, mamba3: every recurrent mixer); use forward() on the whole sequence or a "
       "step() loop");
}

}  // namespace ssmlab::mixers
