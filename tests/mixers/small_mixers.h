// Small but non-trivial settings for every registered mixer at width kMixerDim, shared by the mixer suite and the
// Trace-name tests so they run in seconds; every mixer keeps its defaults otherwise.
#pragma once
#include <string>

#include <ATen/CPUGeneratorImpl.h>

#include "ssmlab/mixers/registry.h"

namespace ssmlab::test {

// 32: every registered mixer's defaults that depend on the width fit it (e.g. mamba2's head_dim 64 with E = 2D).
inline constexpr int64_t kMixerDim = 32;

inline mixers::MixerOptions small_mixer_options() {
  mixers::MixerOptions o;
  o.mamba1.d_state = 5;
  o.mamba2.d_state = 5;
  o.mamba2.head_dim = 4;
  o.mamba2.chunk_size = 4;
  o.attention.n_heads = 4;
  o.s4d.d_state = 6;
  o.h3.d_state = 6;
  o.h3.head_dim = 2;
  o.rwkv5.head_size = 8;
  o.rwkv6.head_size = 8;
  o.rwkv6.mix_rank = 3;
  o.rwkv6.decay_rank = 5;
  o.hgrn2.n_heads = 4;
  o.hgrn2.expand_ratio = 5;
  o.deltanet.n_heads = 2;
  o.deltanet.head_dim = 4;
  o.gated_deltanet.n_heads = 2;
  o.gated_deltanet.n_v_heads = 4;  // grouped value heads
  o.gated_deltanet.head_dim = 4;
  o.gated_deltanet.expand_v = 1.5;
  o.kda.n_heads = 2;
  o.kda.head_dim = 5;
  o.mamba3.d_state = 8;
  o.mamba3.head_dim = 16;  // E = 64, H = 4, S = 2
  o.mamba3.chunk_size = 4;
  return o;
}

// The mixer `name` at width kMixerDim (layer 1 of 3, reference backend), in eval mode (no dropout).
inline mixers::MixerPtr make_small_mixer(const std::string& name, uint64_t seed,
                                         const mixers::MixerOptions& opts = small_mixer_options()) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto m = mixers::make_mixer(name, opts, {kMixerDim, /*layer_idx=*/1, /*n_layers=*/3, "reference"}, gen);
  m->eval();
  return m;
}

}  // namespace ssmlab::test
