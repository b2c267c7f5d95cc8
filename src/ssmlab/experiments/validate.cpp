#include "ssmlab/experiments/validate.h"

#include <unistd.h>

#include <algorithm>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"

namespace ssmlab::experiments {

void check_run_name(const std::string& name, const std::string& source) {
  constexpr size_t kMaxName = 100;
  auto safe = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  };
  std::string shown = name.size() > 60 ? name.substr(0, 57) + "..." : name;
  for (char& c : shown)
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  if (name.empty() || name.size() > kMaxName)
    fail_config(source, ": run.name must be 1 to ", kMaxName, " characters, got ", name.size());
  if (!std::all_of(name.begin(), name.end(), safe))
    fail_config(source, ": run.name may hold only letters, digits, '.', '_' and '-' (it names the run folder), "
                "got \"", shown, "\"");
  if (name.find("..") != std::string::npos)
    fail_config(source, ": run.name may not contain \"..\", got \"", shown, "\"");
}

double physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

// A lower bound of what a run holds in host memory at once, from the sizes alone (no allocation): the embedding
// and head (vocabulary x width), the blocks (>= 3 D^2 a layer: every mixer projects in and out) with AdamW's two
// moments and the gradient (16 bytes a parameter in fp32), and the MQAR token tensors (inputs and targets, 8 bytes
// a token each). A config whose bound is past the machine's memory can only fail later, after a long wait or an
// OOM kill; it is refused now with the numbers.
void check_memory(const Config& cfg, const std::string& source, double available_bytes) {
  if (available_bytes <= 0) return;
  const double D = static_cast<double>(cfg.model.d_model), layers = static_cast<double>(cfg.model.n_layers);
  double vocab = 0, tokens = 0;
  if (cfg.task.name == "mqar") {
    vocab = static_cast<double>(cfg.task.mqar.vocab_size);
    for (const auto* split : {&cfg.task.mqar.train, &cfg.task.mqar.test})
      for (const auto& seg : *split) tokens += static_cast<double>(seg.count) * static_cast<double>(seg.seq_len);
  }
  const double params = vocab * D + layers * 3.0 * D * D;
  const double bytes = params * 16.0 + tokens * 16.0;
  if (bytes > available_bytes) {
    auto gb = [](double b) { return str(static_cast<double>(static_cast<int64_t>(b / 1e8)) / 10.0, " GB"); };
    fail_config(source, ": this run needs at least ", gb(bytes), " of memory (", gb(params * 16.0),
                " for ~", static_cast<int64_t>(params), " parameters with AdamW state: model.d_model ", cfg.model.d_model,
                ", model.n_layers ", cfg.model.n_layers, ", vocabulary ", static_cast<int64_t>(vocab), "; ",
                gb(tokens * 16.0), " for the task's ", static_cast<int64_t>(tokens),
                " tokens); this machine has ", gb(available_bytes));
  }
}

// Mamba-1's token-dynamics options (spec §4.2, §4.3) against the rest of the config.
void check_mamba1_dynamics(const Config& cfg, const std::string& source) {
  if (cfg.model.mixer != "mamba1") return;
  const auto& m = cfg.model.mixers.mamba1;
  if (m.eigen != "none") {
    // The scan's N: d_state plus the polarized transitions' constant channels.
    const int64_t extra = m.transition == "polarized" ? 2 : m.transition == "standard" ? 0 : 1;
    const int64_t N = m.d_state + extra, E = m.expand * cfg.model.d_model;
    if (N > E)
      fail_config(source, ": model.mixers.mamba1.eigen = \"", m.eigen, "\" needs the state size N = ", N,
                  " (d_state + polarized channels) <= the inner width E = expand * d_model = ", E);
    if (m.eigen == "mixed" && N < 2)
      fail_config(source, ": model.mixers.mamba1.eigen = \"mixed\" needs at least 2 states (one positive, one "
                  "negative); model.mixers.mamba1.d_state is ", m.d_state);
  }
  if (m.reorder != "off" && cfg.task.name != "seqimage")
    fail_config(source, ": model.mixers.mamba1.reorder = \"", m.reorder, "\" sorts the whole sequence, so the "
                "mixer is not causal: it is for tasks with one label per sequence (seqimage), not task '",
                cfg.task.name, "'");
}

void validate_config(const Config& cfg, const std::string& source) {
  check_run_name(cfg.run.name, source);
  check_mamba1_dynamics(cfg, source);
  check_memory(cfg, source, physical_memory_bytes());
}

}  // namespace ssmlab::experiments
