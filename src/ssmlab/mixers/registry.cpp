#include "ssmlab/mixers/registry.h"

#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

const std::vector<MixerInfo>& mixer_table() {
  static const std::vector<MixerInfo> table = {
      {"mamba1", "Mamba-1 selective SSM (S6), spec §1.1",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<Mamba1Impl>(o.mamba1, a.d_model, a.backend, gen, a.layer_idx);
       }},
      {"mamba2", "Mamba-2 (SSD): scalar decay per head, chunked scan, gated RMSNorm, interventions, spec §1.3",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<Mamba2Impl>(o.mamba2, a.d_model, a.backend, gen);
       }},
      {"attention", "causal multi-head softmax attention (fused QKV, optional RoPE, KV-cache decoding), spec §1.7",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<AttentionImpl>(o.attention, a.d_model, gen);
       }},
      {"s4d", "S4D diagonal LTI SSM (ZOH or bilinear, FFT convolution), spec §1.5",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<S4dImpl>(o.s4d, a.d_model, gen);
       }},
      {"h3", "H3: shift SSM on k, per-head diagonal SSM on k v^T (FFT long conv, l_max cap), spec §1.4",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<H3Impl>(o.h3, a.d_model, gen);
       }},
      {"rwkv4", "RWKV-4 time mixer (token shift, WKV with running-max stabilisation, ops/wkv), spec §1.6",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<Rwkv4Impl>(o.rwkv4, a.d_model, a.layer_idx, a.n_layers, a.backend, gen);
       }},
      {"rwkv5", "RWKV-5 (Eagle): matrix state per head, static decay, bonus u, GroupNorm + SiLU gate, spec §1.6",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<Rwkv5Impl>(o.rwkv5, a.d_model, a.layer_idx, a.n_layers, gen);
       }},
      {"rwkv6", "RWKV-6 (Finch): RWKV-5 with data-dependent token shift and decay (LoRA), spec §1.6",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<Rwkv6Impl>(o.rwkv6, a.d_model, a.layer_idx, a.n_layers, gen);
       }},
      {"hgrn2", "HGRN-2: gated linear RNN with outer-product state expansion, forget lower bound, spec §1.6",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<Hgrn2Impl>(o.hgrn2, a.d_model, a.layer_idx, a.n_layers, gen);
       }},
      {"deltanet", "DeltaNet: delta rule, short convs, L2-normalised q/k, RMSNorm output (fla's layer), ops/delta_rule",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<DeltaNetImpl>(o.deltanet, DeltaVariant::deltanet, a.d_model, a.backend, gen);
       }},
      {"gated_deltanet", "Gated DeltaNet: delta rule with one decay per head, gated RMSNorm output (fla's layer)",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<DeltaNetImpl>(o.gated_deltanet, DeltaVariant::gated, a.d_model, a.backend, gen);
       }},
      {"kda", "KDA (Kimi Delta Attention): delta rule with one decay per key channel, sigmoid-gated output",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<DeltaNetImpl>(o.kda, DeltaVariant::kda, a.d_model, a.backend, gen);
       }},
      {"mamba3", "Mamba-3 (SISO or MIMO): exponential-trapezoidal update, data-dependent rotation, no conv, ops/mamba3",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<Mamba3Impl>(o.mamba3, a.d_model, a.backend, gen);
       }},
  };
  return table;
}

std::vector<std::string> mixer_names() {
  std::vector<std::string> names;
  for (const auto& m : mixer_table()) names.push_back(m.name);
  return names;
}

MixerPtr make_mixer(const std::string& name, const MixerOptions& opts, const MixerArgs& args, at::Generator& gen) {
  for (const auto& m : mixer_table())
    if (m.name == name) return m.make(opts, args, gen);
  std::string names;
  for (const auto& n : mixer_names()) names += (names.empty() ? "" : ", ") + n;
  fail("unknown mixer '", name, "': expected one of ", names);
}

}  // namespace ssmlab::mixers
