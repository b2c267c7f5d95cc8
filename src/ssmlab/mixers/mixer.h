// The mixer contract (docs/ARCHITECTURE.md, "The mixer contract"): every sequence mixer is one file
// behind this interface plus one line in registry.cpp. Analyses see only this interface and Trace.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <torch/nn/module.h>

#include "ssmlab/core/trace.h"

namespace ssmlab::mixers {

// A mixer's recurrent state for step-by-step decoding, by name (e.g. "conv", "ssm").
struct State {
  std::map<std::string, at::Tensor> tensors;
  at::Tensor& operator[](const std::string& name) { return tensors[name]; }
  const at::Tensor& at(const std::string& name) const;
};

class MixerImpl : public torch::nn::Module {
 public:
  ~MixerImpl() override = default;
  // x: (B, L, D) -> (B, L, D). Records named intermediates into `trace` when it is not null: exactly the names
  // docs/GLOSSARY.md "Trace names" lists for the mixer (tests/mixers/test_trace_names.cpp parses its tables).
  virtual at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) = 0;
  // One recurrent step: x_t (B, D) -> (B, D); updates `state` in place.
  virtual at::Tensor step(const at::Tensor& x_t, State& state) = 0;
  // x (B, L, D) continuing from `state` (init_state, a previous call, or step()s: the same State), which is
  // updated: the state-carrying path of long-sequence evaluation, where the caller cuts a long input into
  // segments and memory stays that of one segment. Mixers that return supports_stateful() false throw here
  // (the default); step() remains their only state-carrying path. Its Trace records are per position besides
  // `state` (Trace::merge_segments relies on it for Block's state snapshots).
  virtual at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr);
  virtual bool supports_stateful() const { return false; }
  virtual State init_state(int64_t batch, c10::Device device) const = 0;
  // Numbers held per sequence in the recurrent state (capacity plots), e.g. E·N (+ E·(W-1) conv).
  virtual int64_t state_size() const = 0;
  // True when state_size() counts numbers per cached position (attention's KV cache grows with the sequence).
  virtual bool state_per_token() const { return false; }
  virtual std::string kind() const = 0;
  // The input-output matrix S_C^T S_B (E_in, E_in) of a selective SSM whose B_t = S_B u_t and C_t = S_C u_t are
  // linear in the scan's input u_t (spec §4.1: C_t^T B_s = u_t^T S_C^T S_B u_s couples positions t and s; the
  // signs of its eigenvalues decide whether tokens converge or diverge through depth). Built from the current
  // parameters (differentiable). nullopt for mixers without one (the default); analysis/eigen.* reads it.
  virtual std::optional<at::Tensor> input_output_matrix() { return std::nullopt; }
};

using MixerPtr = std::shared_ptr<MixerImpl>;

}  // namespace ssmlab::mixers
