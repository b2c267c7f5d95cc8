// The one visible list of mixers (registry.cpp). A new mixer adds its options struct to MixerOptions
// and one entry to the table.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/attention.h"
#include "ssmlab/mixers/deltanet.h"
#include "ssmlab/mixers/h3.h"
#include "ssmlab/mixers/hgrn2.h"
#include "ssmlab/mixers/mamba1.h"
#include "ssmlab/mixers/mamba2.h"
#include "ssmlab/mixers/mamba3.h"
#include "ssmlab/mixers/mixer.h"
#include "ssmlab/mixers/rwkv4.h"
#include "ssmlab/mixers/rwkv5.h"
#include "ssmlab/mixers/rwkv6.h"
#include "ssmlab/mixers/s4d.h"

namespace ssmlab::mixers {

// Per-mixer option sub-tables: [model.mixers.mamba1] ...
struct MixerOptions {
  Mamba1Options mamba1;
  Mamba2Options mamba2;
  AttentionOptions attention;
  S4dOptions s4d;
  H3Options h3;
  Rwkv4Options rwkv4;
  Rwkv5Options rwkv5;
  Rwkv6Options rwkv6;
  Hgrn2Options hgrn2;
  DeltaNetOptions deltanet;
  GatedDeltaNetOptions gated_deltanet;
  KdaOptions kda;
  Mamba3Options mamba3;

  template <class V>
  void visit(V& v) {
    v("mamba1", mamba1, "Mamba-1 (S6) options");
    v("mamba2", mamba2, "Mamba-2 (SSD) options");
    v("attention", attention, "causal multi-head attention options");
    v("s4d", s4d, "S4D (diagonal LTI SSM) options");
    v("h3", h3, "H3 (shift SSM + diagonal SSM) options");
    v("rwkv4", rwkv4, "RWKV-4 time mixer options");
    v("rwkv5", rwkv5, "RWKV-5 (Eagle) time mixer options");
    v("rwkv6", rwkv6, "RWKV-6 (Finch) time mixer options");
    v("hgrn2", hgrn2, "HGRN-2 options");
    v("deltanet", deltanet, "DeltaNet (delta rule, no decay) options");
    v("gated_deltanet", gated_deltanet, "Gated DeltaNet (delta rule, one decay per head) options");
    v("kda", kda, "KDA (delta rule, one decay per key channel) options");
    v("mamba3", mamba3, "Mamba-3 (SISO / MIMO) options");
  }
};

struct MixerArgs {
  int64_t d_model = 0;
  int64_t layer_idx = 0;
  int64_t n_layers = 1;
  std::string backend = "auto";  // ops backend
};

struct MixerInfo {
  std::string name;
  std::string summary;
  std::function<MixerPtr(const MixerOptions&, const MixerArgs&, at::Generator&)> make;
};

const std::vector<MixerInfo>& mixer_table();
std::vector<std::string> mixer_names();
MixerPtr make_mixer(const std::string& name, const MixerOptions& opts, const MixerArgs& args, at::Generator& gen);

}  // namespace ssmlab::mixers
