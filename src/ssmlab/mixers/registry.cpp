#include "ssmlab/mixers/registry.h"

#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

const std::vector<MixerInfo>& mixer_table() {
  static const std::vector<MixerInfo> table = {
      {"mamba1", "Mamba-1 selective SSM (S6), spec §1.1",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<Mamba1Impl>(o.mamba1, a.d_model, a.backend, gen);
       }},
      {"mamba2", "Mamba-2 (SSD): scalar decay per head, chunked scan, gated RMSNorm, interventions, spec §1.3",
       [](const MixerOptions& o, const MixerArgs& a, at::Generator& gen) -> MixerPtr {
         return std::make_shared<Mamba2Impl>(o.mamba2, a.d_model, a.backend, gen);
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
