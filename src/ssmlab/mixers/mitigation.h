// The training-free state-collapse mitigations (spec §3.6) behind one small interface, so that an analysis can
// switch them on for any mixer that has them (dynamic_cast<Mitigable*> on a Mixer) without seeing the concrete
// mixer (docs/ARCHITECTURE.md's layer rule). Mamba-2 has all three; Mamba-1 has RRI only. A mixer's config
// keys (model.mixers.mamba2.interventions.*) set the same knobs for a whole run; this interface changes them
// between evaluations of one loaded model (loss_position's `variants`).
#pragma once
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ssmlab::mixers {

struct Mitigations {
  double decay_mult = 1.0;  // RRI λ_α (spec §3.6.1): α <- λ_α·α
  double b_mult = 1.0;      // RRI λ_B: B <- λ_B·B
  // State normalisation (spec §3.6.2): per-head thresholds τ (H), the state's dim 1; undefined = off.
  at::Tensor state_norm_tau;
  // "min": S <- S·min(1, τ/‖S‖_F) (the intended form, the default); "seed": the seed code's S <- S·‖S‖_F/τ
  // where ‖S‖_F > τ (spec §6.9: it grows the state; kept to reproduce the seed).
  std::string state_norm_form = "min";
  int64_t window = 0;  // state-difference sliding window r in tokens (spec §3.6.3); 0 = off
};

class Mitigable {
 public:
  virtual ~Mitigable() = default;
  // Which of "rri", "state_norm", "window" this mixer implements.
  virtual std::vector<std::string> mitigations_supported() const = 0;
  // The current settings (from the config's interventions, or the last set_mitigations).
  virtual Mitigations mitigations() const = 0;
  // Replaces the settings; ConfigError naming the mitigation when one is not supported or out of range.
  // States made before the call may not fit the new settings: make new ones with init_state.
  virtual void set_mitigations(const Mitigations& m) = 0;
};

}  // namespace ssmlab::mixers
