#include "ssmlab/ops/backend.h"

#include <algorithm>

#include "ssmlab/core/error.h"
#include "ssmlab/core/log.h"

namespace ssmlab::ops {

const std::vector<OpInfo>& op_table() {
  static const std::vector<OpInfo> table = {
      {"selective_scan", "Mamba-1 selective scan (S6): diagonal A, input-dependent delta, B, C",
#ifdef SSMLAB_WITH_CUDA
       {"cpu", "cuda"}},
#else
       {"cpu"}},
#endif
      {"selective_scan_varlen", "selective_scan over packed variable-length sequences (cu_seqlens), state reset per sequence",
#ifdef SSMLAB_WITH_CUDA
       {"cpu", "cuda"}},
#else
       {"cpu"}},
#endif
      {"causal_conv1d", "depthwise causal conv1d, width 1-4, optional SiLU, state carry",
#ifdef SSMLAB_WITH_CUDA
       {"cpu", "cuda"}},
#else
       {"cpu"}},
#endif
      {"causal_conv1d_update", "one decode step of causal_conv1d, state shifted in place",
#ifdef SSMLAB_WITH_CUDA
       {"cuda"}},
#else
       {}},
#endif
      {"selective_state_update", "one decode step of the selective scan, state updated in place",
#ifdef SSMLAB_WITH_CUDA
       {"cpu", "cuda"}},
#else
       {"cpu"}},
#endif
      // "auto" runs the fused kernel of a listed device where it supports the case, else the chunked SSD
      // algorithm in ATen (any device); ssd_scan.cpp decides, not resolve_backend.
      {"ssd_scan", "Mamba-2 SSD scan: scalar decay per head, grouped B/C, chunked (state-space duality)",
#ifdef SSMLAB_WITH_CUDA
       {"cpu", "cuda"}},
#else
       {"cpu"}},
#endif
      {"ssd_scan_update", "one decode step of ssd_scan, state in place (one CUDA kernel where built, else ATen)",
       {}, /*has_ref=*/false},
      {"wkv", "RWKV-4 WKV recurrence, running-max stabilised, state carry",
#ifdef SSMLAB_WITH_CUDA
       {"cpu", "cuda"}},
#else
       {"cpu"}},
#endif
      // "auto" runs the fused kernel of a listed device where it supports the case, else the chunked UT/WY
      // algorithm in ATen (any device); delta_rule.cpp decides.
      {"delta_rule", "gated delta rule (DeltaNet, Gated DeltaNet, KDA): per-head or per-key decay, beta, GVA",
#ifdef SSMLAB_WITH_CUDA
       {"cpu", "cuda"}},
#else
       {"cpu"}},
#endif
      {"delta_rule_update", "one decode step of delta_rule, state in place (plain ATen)", {}, /*has_ref=*/false},
      // CUDA: ssd_scan's kernels under the look-ahead SSD core (ops/mamba3/ssd_kernels.cpp); mamba3.cpp decides.
      {"mamba3_scan", "Mamba-3 scan (SISO and MIMO): trapezoidal update, data-dependent rotation, carried state",
#ifdef SSMLAB_WITH_CUDA
       {"cpu", "cuda"}},
#else
       {"cpu"}},
#endif
      {"mamba3_step", "one decode step of mamba3_scan, returns the next state (plain ATen)", {}, /*has_ref=*/false},
      // Where no fused kernel runs, "auto" takes the row-blocked ATen path (one block widened at a time);
      // cross_entropy.cpp decides.
      {"cross_entropy", "token cross-entropy (loss and logsumexp per row, ignore_index) without fp32 (M, V) copies",
#ifdef SSMLAB_WITH_CUDA
       {"cpu", "cuda"}},
#else
       {"cpu"}},
#endif
  };
  return table;
}

void check_backend_name(const std::string& name) {
  SSMLAB_CHECK(name == "auto" || name == "reference", "unknown ops backend '", name,
               "': expected \"auto\" or \"reference\"");
}

Backend resolve_backend(const std::string& name, const std::string& op, c10::Device device,
                        bool fused_supported) {
  check_backend_name(name);
  if (name == "reference") return Backend::reference;
  const auto& table = op_table();
  auto it = std::find_if(table.begin(), table.end(), [&](const OpInfo& i) { return i.name == op; });
  SSMLAB_CHECK(it != table.end(), "resolve_backend: unknown op '", op, "'");
  const std::string dev = c10::DeviceTypeName(device.type(), /*lower_case=*/true);
  if (std::find(it->fused_devices.begin(), it->fused_devices.end(), dev) == it->fused_devices.end()) {
    log::warn_once("fallback:" + op + ":" + dev,
                   str("ops: no fused ", op, " kernel for ", dev, " yet; running the reference"));
    return Backend::reference;
  }
  if (!fused_supported) {
    log::warn_once("unsupported:" + op + ":" + dev,
                   str("ops: the fused ", op, " kernel for ", dev,
                       " does not support this case (dtype or size); running the reference"));
    return Backend::reference;
  }
  return Backend::fused;
}

}  // namespace ssmlab::ops
